import subprocess, sys, pandas as pd, pytest
import fastnorm.study.compare as fc
from fastnorm.study.compare import CompareConfig, run_comparison

def tiny_cfg(path, **kw):
    return CompareConfig(**{**dict(data=str(path), norms=('none', 'global', 'channel'), runs=1, epochs=1, bs=8), **kw})

@pytest.fixture
def count_training(monkeypatch):
    "Count (and optionally interrupt) training runs"
    calls = []
    real = fc._train_one
    def counted(dls, cfg, norm, run, seed, out, *rest):
        calls.append((norm, run))
        if getattr(counted, 'stop_at', None) == len(calls): raise KeyboardInterrupt
        return real(dls, cfg, norm, run, seed, out, *rest)
    monkeypatch.setattr(fc, '_train_one', counted)
    counted.calls = calls
    return counted

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
    assert list(res.columns) == ['norm', 'run', 'seed', 'final_acc', 'best_acc', 'train_loss', 'valid_loss', 'seconds']
    assert list(res['norm']) == ['none', 'wave', 'global', 'channel', 'instance', 'imagenet'] and res['final_acc'].between(0, 1).all()
    assert (res['best_acc'] >= res['final_acc']).all() and (res['seconds'] > 0).all()
    md = (out/'summary.md').read_text()
    assert '| normalization | n | mean acc' in md and '| channel | 1 |' in md and 'chance 0.250' in md
    assert '| normalization | n | mean acc' in r.stdout  # the table is printed too
    assert len(pd.read_csv(out/'curves.csv')) == 6

@pytest.mark.slow
def test_same_seed_same_accuracy(tiny_esc50, tmp_path):
    a = run_comparison(tiny_cfg(tiny_esc50, norms=('channel',)), out=tmp_path/'a', progress=False, log=lambda *_: None)
    b = run_comparison(tiny_cfg(tiny_esc50, norms=('channel',)), out=tmp_path/'b', progress=False, log=lambda *_: None)
    assert a['final_acc'].tolist() == b['final_acc'].tolist() and a['valid_loss'].tolist() == b['valid_loss'].tolist()

@pytest.mark.slow
def test_interrupted_comparison_resumes_only_missing_runs(tiny_esc50, tmp_path, count_training):
    cfg, out = tiny_cfg(tiny_esc50, runs=2, norms=('none', 'channel')), tmp_path/'o'
    count_training.stop_at = 3
    with pytest.raises(KeyboardInterrupt): run_comparison(cfg, out=out, progress=False, log=lambda *_: None)
    kept = pd.read_csv(out/'results.csv')
    assert list(zip(kept['norm'], kept['run'])) == [('none', 0), ('channel', 0)]
    with pytest.raises(FileExistsError, match='pass --resume'): run_comparison(cfg, out=out, progress=False)
    count_training.stop_at = None
    res = run_comparison(cfg, out=out, resume=True, progress=False, log=lambda *_: None)
    assert count_training.calls[3:] == [('none', 1), ('channel', 1)]  # only the two missing runs were trained
    assert len(res) == 4 and res.iloc[:2].equals(kept)  # finished runs kept as they were
    with pytest.raises(ValueError, match='other settings'): run_comparison(tiny_cfg(tiny_esc50, runs=2, epochs=2, norms=('none', 'channel')), out=out, resume=True)

@pytest.mark.parametrize('kw,err,msg', [
    (dict(norms=('none', 'bogus')), ValueError, r"Unknown normalization\(s\) \['bogus'\]"),
    (dict(fold=9), ValueError, r'fold 9 does not exist'),
    (dict(bs=64), ValueError, r'bs=64 is larger than the training set of --data .* \(32 items\)'),
    (dict(arch='vgg'), ValueError, r"Unknown --arch 'vgg'"),
    (dict(specaugment='XX'), ValueError, r"Unknown --specaugment policy 'XX'"),
])
def test_bad_input_fails_before_training(tiny_esc50, tmp_path, count_training, kw, err, msg):
    with pytest.raises(err, match=msg): run_comparison(tiny_cfg(tiny_esc50, **kw), out=tmp_path/'o', progress=False)
    assert count_training.calls == [] and not (tmp_path/'o'/'results.csv').exists()

def test_unknown_layout_and_missing_folder(tmp_path, count_training):
    (tmp_path/'junk').mkdir(); (tmp_path/'junk'/'notes.txt').write_text('x')
    with pytest.raises(ValueError, match='is not a known layout'): run_comparison(tiny_cfg(tmp_path/'junk'), out=tmp_path/'o', progress=False)
    with pytest.raises(FileNotFoundError, match='no such folder'): run_comparison(tiny_cfg(tmp_path/'nope'), out=tmp_path/'o', progress=False)
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
        fc.make_learner(dls, 'resnet18', pretrained=True)

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
    assert list(res['norm']) == ['none', 'channel'] and res['final_acc'].between(0, 1).all()
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
    with pytest.raises(ValueError, match="--fold 2: .* FSDD's layout, which has no folds"): fc.resolve_data(str(d), 2)

@pytest.mark.slow
def test_shift_columns_and_resume_evaluates_only_missing_shifts(tiny_esc50, tmp_path, count_training):
    cfg, out = tiny_cfg(tiny_esc50, norms=('none', 'fbn'), shifts=('gain:0', 'gain:-20')), tmp_path/'o'
    res = run_comparison(cfg, out=out, progress=False, log=lambda *_: None)
    assert list(res.columns[-2:]) == ['acc@gain:0', 'acc@gain:-20'] and res['acc@gain:-20'].between(0, 1).all()
    assert res['acc@gain:0'].tolist() == res['final_acc'].tolist()  # the shift path reproduces the learner's own validation
    assert sorted(p.name for p in (out/'models').iterdir()) == ['fbn-run0.pt', 'none-run0.pt']
    calls = len(count_training.calls)
    cfg2 = tiny_cfg(tiny_esc50, norms=('none', 'fbn'), shifts=('gain:0', 'gain:-20', 'noise:10'))
    res2 = run_comparison(cfg2, out=out, resume=True, progress=False, log=lambda *_: None)
    assert len(count_training.calls) == calls  # nothing trained again
    assert res2[list(res.columns)].equals(res) and res2['acc@noise:10'].between(0, 1).all()
    md = (out/'summary.md').read_text()
    assert '## Under deployment shifts' in md and '### noise:10' in md and '| fbn | 1 |' in md
    assert 'change from unshifted (paired)' in md and "`fbn`: PANNs' bn0" in md

def test_unknown_shift_fails_before_training(tiny_esc50, tmp_path, count_training):
    with pytest.raises(ValueError, match=r"Unknown shift 'loud:3'"):
        run_comparison(tiny_cfg(tiny_esc50, shifts=('loud:3',)), out=tmp_path/'o', progress=False)
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
    _, _, _, n_train = fc.resolve_data(str(d), 1, 'cy')
    assert n_train == 12
    with pytest.raises(ValueError, match="test_speaker 'zed' does not exist"): fc.resolve_data(str(d), 1, 'zed')
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
