import subprocess, sys, numpy as np, pandas as pd, pytest
from fastai.callback.core import Callback
from fastnorm.study import CompareConfig, run_comparison, make_learner
from fastnorm.study.datasets import resolve_data

N_VALID = 8  # tiny_esc50's fold 1: 4 classes x 2 clips

def tiny_cfg(path, **kw):
    return CompareConfig(**{**dict(data=str(path), norms=('none', 'global', 'channel'), runs=1, epochs=1, bs=8), **kw})

def assert_counts(acc, n=N_VALID):
    "`acc` are accuracies over `n` items: whole numbers of correct answers out of `n`"
    k = np.asarray(acc, float) * n
    assert len(k) and np.allclose(k, k.round(), rtol=0, atol=1e-4) and ((k >= 0) & (k <= n)).all(), acc

class CountTraining(Callback):
    "Records the job of every training it joins, and interrupts the `stop_at`-th before it trains"
    def __init__(self, folds=False): self.calls, self.stop_at, self.folds = [], None, folds
    def before_fit(self):
        self.calls.append((self.learn.job.norm, self.learn.job.run) + ((self.learn.job.fold,) if self.folds else ()))
        if self.stop_at == len(self.calls): raise KeyboardInterrupt

@pytest.fixture
def count_training():
    return CountTraining()

@pytest.mark.slow
def test_cli_end_to_end(tiny_esc50, tmp_path):
    out = tmp_path/'out'
    r = subprocess.run([sys.executable, '-m', 'fastnorm', 'compare', '--data', str(tiny_esc50), '--runs', '1', '--epochs', '1',
                        '--bs', '8', '--norms', 'none,wave,global,channel,instance,imagenet', '--shift', 'none', '--out', str(out), '--no-progress'],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    for f in ['results.csv', 'curves.csv', 'summary.md', 'config.json', 'comparison.png', 'curves.png', 'stats_global.png',
              'stats_channel.png', 'stats_global.pt', 'stats_channel.pt']:
        assert (out/f).is_file() and (out/f).stat().st_size > 0, f
    res = pd.read_csv(out/'results.csv')
    assert list(res.columns) == ['norm', 'run', 'fold', 'seed', 'final_acc', 'best_acc', 'train_loss', 'valid_loss', 'seconds']
    assert (res['fold'] == 1).all()
    assert list(res['norm']) == ['none', 'wave', 'global', 'channel', 'instance', 'imagenet']
    assert_counts(res['final_acc'])
    assert (res['best_acc'] >= res['final_acc']).all() and (res['seconds'] > 0).all()
    md = (out/'summary.md').read_text()
    assert '| normalization | n | mean acc' in md and '| channel | 1 |' in md and 'chance 0.250' in md
    assert '| normalization | n | mean acc' in r.stdout  # the table is printed too
    cur = pd.read_csv(out/'curves.csv')
    assert len(cur) == 6 and cur['accuracy'].tolist() == res['final_acc'].tolist()  # one epoch: its accuracy is final

@pytest.mark.slow
def test_same_seed_same_accuracy(tiny_esc50, tmp_path):
    a = run_comparison(tiny_cfg(tiny_esc50, norms=('channel',)), out=tmp_path/'a', progress=False, log=lambda *_: None)
    b = run_comparison(tiny_cfg(tiny_esc50, norms=('channel',)), out=tmp_path/'b', progress=False, log=lambda *_: None)
    assert a['final_acc'].tolist() == b['final_acc'].tolist() and a['valid_loss'].tolist() == b['valid_loss'].tolist()

@pytest.mark.slow
def test_interrupted_comparison_resumes_only_missing_runs(tiny_esc50, tmp_path, count_training):
    cfg, out = tiny_cfg(tiny_esc50, runs=2, norms=('none', 'channel')), tmp_path/'o'
    count_training.stop_at = 3
    with pytest.raises(KeyboardInterrupt):
        run_comparison(cfg, out=out, progress=False, log=lambda *_: None, cbs=[count_training])
    kept = pd.read_csv(out/'results.csv')
    assert list(zip(kept['norm'], kept['run'])) == [('none', 0), ('channel', 0)]
    with pytest.raises(FileExistsError, match='pass --resume'): run_comparison(cfg, out=out, progress=False)
    count_training.stop_at = None
    res = run_comparison(cfg, out=out, resume=True, progress=False, log=lambda *_: None, cbs=[count_training])
    assert count_training.calls[3:] == [('none', 1), ('channel', 1)]  # only the two missing runs were trained
    assert len(res) == 4 and res.iloc[:2].equals(kept)  # finished runs kept as they were
    with pytest.raises(ValueError, match='other settings'): run_comparison(tiny_cfg(tiny_esc50, runs=2, epochs=2, norms=('none', 'channel')), out=out, resume=True)

@pytest.mark.parametrize('kw,err,msg', [
    (dict(norms=('none', 'bogus')), ValueError, r"Unknown normalization\(s\) \['bogus'\]"),
    (dict(fold=9), ValueError, r'fold 9 does not exist'),
    (dict(bs=64), ValueError, r'bs=64 is larger than the training set of --data .* \(32 items\)'),
    (dict(arch='vgg'), ValueError, r"`--arch` must be one of \('xresnet18_tiny'.*\('vgg' given\)"),
    (dict(specaugment='XX'), ValueError, r"`--specaugment` must be one of \('LB'.*\('XX' given\)"),
    (dict(runs=0), ValueError, r"`--runs` must be an integer >= 1 \(0 given\)"),
    (dict(lr=float('nan')), ValueError, r"`--lr` must be a positive number \(nan given\)"),
    (dict(frac=0.), ValueError, r"`--frac` must be a finite number in \(0, 1\] \(0.0 given\)"),
])
def test_bad_input_fails_before_training(tiny_esc50, tmp_path, count_training, kw, err, msg):
    with pytest.raises(err, match=msg):
        run_comparison(tiny_cfg(tiny_esc50, **kw), out=tmp_path/'o', progress=False, cbs=[count_training])
    assert count_training.calls == [] and not (tmp_path/'o'/'results.csv').exists()

def test_unknown_layout_and_missing_folder(tmp_path, count_training):
    (tmp_path/'junk').mkdir(); (tmp_path/'junk'/'notes.txt').write_text('x')
    with pytest.raises(ValueError, match=r"--data .*junk is not in a layout fastnorm reads here: expected ESC-50's"):
        run_comparison(tiny_cfg(tmp_path/'junk'), out=tmp_path/'o', progress=False, cbs=[count_training])
    with pytest.raises(FileNotFoundError, match=r"--data .*nope: no such folder \(use 'synth', 'esc50' or a dataset"):
        run_comparison(tiny_cfg(tmp_path/'nope'), out=tmp_path/'o', progress=False, cbs=[count_training])
    assert count_training.calls == []

@pytest.mark.slow
def test_cli_reports_errors_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'fastnorm', 'compare', '--data', str(tmp_path/'nope'), '--out', str(tmp_path/'o')],
                       capture_output=True, text=True)
    assert r.returncode == 1 and 'fastnorm compare: error: --data' in r.stderr and 'Traceback' not in r.stderr

def test_pretrained_weights_unavailable_is_a_clear_error(tiny_esc50, monkeypatch):
    import torchvision, urllib.error
    from fastnorm.data import esc50_dls
    def offline(self, *a, **k): raise urllib.error.URLError('Name or service not known')
    monkeypatch.setattr(torchvision.models.WeightsEnum, 'get_state_dict', offline)
    dls = esc50_dls(tiny_esc50, bs=8, sr=8000, num_workers=0)
    with pytest.raises(RuntimeError, match=r'(?s)Could not get the ImageNet weights for resnet18.*drop --pretrained'):
        make_learner(dls, 'resnet18', pretrained=True)

def test_pretrained_needs_a_torchvision_resnet():
    with pytest.raises(ValueError, match='--pretrained needs a torchvision resnet'): CompareConfig(pretrained=True).check()

@pytest.mark.slow
def test_specaugment_and_fsdd_layout(tmp_path):
    import numpy as np, soundfile as sf
    d = tmp_path/'fsdd'; d.mkdir()
    for spk in ('ann', 'bob'):
        for take in range(7):
            for digit in range(3):
                t = np.arange(4000) / 8000
                sf.write(d/f'{digit}_{spk}_{take}.wav', (.3*np.sin(2*np.pi*(300 + 400*digit)*t)).astype(np.float32), 8000)
    cfg = CompareConfig(data=str(d), norms=('none', 'channel'), runs=1, epochs=1, bs=4, specaugment='SM')
    res = run_comparison(cfg, out=tmp_path/'o', progress=False, log=lambda *_: None)
    assert list(res['norm']) == ['none', 'channel']
    assert_counts(res['final_acc'], n=2 * 5 * 3)  # 2 speakers x takes 0-4 x 3 digits validate
    assert 'SpecAugment SM' in (tmp_path/'o'/'summary.md').read_text() and 'chance 0.333' in (tmp_path/'o'/'summary.md').read_text()

@pytest.mark.slow
def test_resume_drops_curves_of_a_run_missing_from_results(tiny_esc50, tmp_path):
    cfg, out = tiny_cfg(tiny_esc50, norms=('none',), runs=2), tmp_path/'o'
    run_comparison(cfg, out=out, progress=False, log=lambda *_: None)
    res = pd.read_csv(out/'results.csv'); res[res['run'] == 0].to_csv(out/'results.csv', index=False)  # died after curves, before results
    run_comparison(cfg, out=out, resume=True, progress=False, log=lambda *_: None)
    cur = pd.read_csv(out/'curves.csv')
    assert sorted(zip(cur['norm'], cur['run'], cur['epoch'])) == [('none', 0, 1), ('none', 1, 1)]

def test_fold_with_fsdd_layout_is_an_error(tmp_path):
    import numpy as np, soundfile as sf
    d = tmp_path/'fsdd'; d.mkdir()
    for take in range(6): sf.write(d/f'1_ann_{take}.wav', np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match="--fold 2: .* FSDD's layout, which has no folds"): resolve_data(str(d), 2)

@pytest.mark.slow
def test_shift_columns_and_resume_evaluates_only_missing_shifts(tiny_esc50, tmp_path, count_training):
    cfg, out = tiny_cfg(tiny_esc50, norms=('none', 'fbn'), shifts=('gain:0', 'gain:-20')), tmp_path/'o'
    res = run_comparison(cfg, out=out, progress=False, log=lambda *_: None, cbs=[count_training])
    assert list(res.columns[-2:]) == ['acc@gain:0', 'acc@gain:-20']
    assert_counts(res['acc@gain:-20'])
    assert res['acc@gain:0'].tolist() == res['final_acc'].tolist()  # the shift path reproduces the learner's own validation
    assert sorted(p.name for p in (out/'models').iterdir()) == ['fbn-run0-fold1.pt', 'none-run0-fold1.pt']
    calls = len(count_training.calls)
    cfg2 = tiny_cfg(tiny_esc50, norms=('none', 'fbn'), shifts=('gain:0', 'gain:-20', 'noise:10'))
    res2 = run_comparison(cfg2, out=out, resume=True, progress=False, log=lambda *_: None, cbs=[count_training])
    assert calls == 2 and len(count_training.calls) == calls  # nothing trained again
    assert res2[list(res.columns)].equals(res)
    assert_counts(res2['acc@noise:10'])
    md = (out/'summary.md').read_text()
    assert '## Under deployment shifts' in md and '### noise:10' in md and '| fbn | 1 |' in md
    assert 'change from unshifted (paired)' in md and "`fbn`: PANNs' bn0" in md

def test_unknown_shift_fails_before_training(tiny_esc50, tmp_path, count_training):
    with pytest.raises(ValueError, match=r"Unknown shift 'loud:3'"):
        run_comparison(tiny_cfg(tiny_esc50, shifts=('loud:3',)), out=tmp_path/'o', progress=False, cbs=[count_training])
    assert count_training.calls == []

@pytest.mark.slow
def test_fsdd_speaker_split(tmp_path):
    import numpy as np, soundfile as sf
    d = tmp_path/'fsdd'; d.mkdir()
    for spk in ('ann', 'bob', 'cy'):
        for take in range(3):
            for digit in range(2):
                t = np.arange(2000) / 8000
                sf.write(d/f'{digit}_{spk}_{take}.wav', (.3*np.sin(2*np.pi*(300 + 400*digit)*t)).astype(np.float32), 8000)
    assert resolve_data(str(d), 1, 'cy').n_train == 12
    with pytest.raises(ValueError, match="test_speaker 'zed' does not exist"): resolve_data(str(d), 1, 'zed')
    res = run_comparison(CompareConfig(data=str(d), norms=('none',), runs=1, epochs=1, bs=4, speaker='cy', shifts=('gain:0',)),
                         out=tmp_path/'o', progress=False, log=lambda *_: None)
    assert res['acc@gain:0'].tolist() == res['final_acc'].tolist()
    assert 'speaker cy held out' in (tmp_path/'o'/'summary.md').read_text()

@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tiny_esc50, tmp_path):
    "2 gloo processes on the CPU split the (run, normalization) jobs; the merged results equal a single process's"
    import os
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    args = ['compare', '--data', str(tiny_esc50), '--runs', '2', '--epochs', '1', '--bs', '8', '--norms', 'none,channel,rfn',
            '--shift', 'gain:-20', '--no-progress']
    one = subprocess.run([sys.executable, '-m', 'fastnorm', *args, '--out', str(tmp_path/'one')], capture_output=True, text=True, env=env, timeout=900)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2', '-m', 'fastnorm', *args,
                          '--out', str(tmp_path/'two')], capture_output=True, text=True, env=env, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = pd.read_csv(tmp_path/'one'/'results.csv'), pd.read_csv(tmp_path/'two'/'results.csv')
    assert len(b) == 6 and list(zip(b['norm'], b['run'])) == [(n, r) for r in range(2) for n in ('none', 'channel', 'rfn')]
    assert a.drop(columns='seconds').equals(b.drop(columns='seconds'))
    assert pd.read_csv(tmp_path/'one'/'curves.csv').sort_values(['run', 'norm', 'epoch']).reset_index(drop=True).equals(
        pd.read_csv(tmp_path/'two'/'curves.csv').sort_values(['run', 'norm', 'epoch']).reset_index(drop=True))
    assert '[rank 1/2]' in two.stdout + two.stderr and not list((tmp_path/'two').glob('*.rank*.csv'))
    assert (tmp_path/'two'/'summary.md').read_text().split('\n')[4:] == (tmp_path/'one'/'summary.md').read_text().split('\n')[4:]

def test_ranks_share_jobs_and_name_parts(tmp_path):
    from fastnorm.study.ranks import Ranks
    one, r1 = Ranks(), Ranks(1, 3)
    assert one.share(list(range(7))) == list(range(7)) and r1.share(list(range(7))) == [1, 4]
    assert one.part(tmp_path, 'results') == tmp_path/'results.csv'
    assert r1.part(tmp_path, 'results') == tmp_path/'results.rank1.csv' and not r1.main and one.main
    got = []
    one.log(got.append)('a')
    r1.log(lambda *a: got.append(a))('b')
    assert got == ['a', ('[rank 1/3]', 'b')]

def test_results_in_canonical_order():
    from fastnorm.study.results import canonical
    df = pd.DataFrame(dict(norm=['b', 'x', 'a', 'b', 'a'], run=[1, 0, 1, 0, 0], v=range(5)))
    assert canonical(df, ('a', 'b'))['v'].tolist() == [4, 3, 1, 2, 0]  # run 0 then 1; --norms order; unknown last

def test_a_recipe_is_one_entry_of_callables(tiny_esc50, tmp_path, monkeypatch):
    "`apply_recipe` calls what the entry holds: its batch transform (with the statistics it fits), stem and augmentation"
    import torch
    from fastnorm.freqnorm import FreqMixStyle, FreqBatchNorm
    from fastnorm.norm import GlobalSpecNorm
    from fastnorm.study.recipes import RECIPES, Recipe, apply_recipe
    from fastnorm.study.datasets import make_dls
    assert RECIPES['mixstyle'] == RECIPES['ast'].plus(RECIPES['mixstyle'].aug, RECIPES['mixstyle'].doc)
    fitted = []
    def spec_norm(dls, fit):
        fitted.append(fit('global', 'stats_mine'))
        dls.add_tfms([GlobalSpecNorm(fitted[-1])], 'after_batch')
    mine = Recipe(True, spec_norm, lambda c: FreqBatchNorm(c.n_freq)).plus(lambda: FreqMixStyle(p=1.), 'mine')
    monkeypatch.setitem(RECIPES, 'mine', mine)
    src = resolve_data(str(tiny_esc50))
    dls = make_dls(src, tiny_cfg(tiny_esc50, norms=('mine',)), RECIPES['mine'].wave, 1, progress=False)
    stem = apply_recipe(dls, 'mine', frac=1., seed=0, stats_dir=tmp_path)
    assert isinstance(stem, FreqBatchNorm) and stem.n_bands == dls.one_batch()[0].shape[2]
    assert [type(t).__name__ for t in dls.train.after_batch.fs][-2:] == ['GlobalSpecNorm', 'FreqMixStyle']
    assert (tmp_path/'stats_mine.pt').is_file() and fitted[0].red_dims == (0, 1, 2, 3)
    x = dls.valid.one_batch()[0]  # normalized with the training set's one mean and std; no MixStyle at validation
    assert torch.isfinite(x).all() and len(fitted) == 1
