"Cross-validation by fold (`--folds`), ESC-10 (`--subset esc10`) and real folders at real rates in the comparison"
import shutil, subprocess, sys
import numpy as np, pandas as pd, pytest, soundfile as sf, torch
from conftest import SHARED, needs
from test_compare import CountTraining, assert_counts, tiny_cfg
from fastnorm.study import CompareConfig, run_comparison
from fastnorm.study.config import parse_folds
from fastnorm.study.datasets import resolve_data
from fastnorm.study.report import plot_comparison, summarize
from fastnorm.study.results import Ledger, read_table
from fastnorm.study.ranks import Ranks

ESC10 = SHARED/'esc10'
quiet = dict(progress=False, log=lambda *_: None)

@pytest.mark.parametrize('text,folds', [('1-5', (1, 2, 3, 4, 5)), ('1,3', (1, 3)), ('2', (2,)), (' 1-2,4 ', (1, 2, 4)),
                                        ('all', 'all')])
def test_parse_folds(text, folds):
    assert parse_folds(text) == folds

@pytest.mark.parametrize('text', ['fold1', '1-', 'a,b', '', '5-1'])
def test_parse_folds_refuses_what_is_not_a_fold_list(text):
    with pytest.raises(ValueError, match=r"--folds .*: expected folds like 1-5, 1,3 or all"): parse_folds(text)

@pytest.mark.parametrize('kw,msg', [
    (dict(folds=(1, 1)), r'--folds lists a fold twice: 1,1'),
    (dict(folds=(0, 1)), r'--folds \(0, 1\): expected positive whole-number folds'),
    (dict(folds=(1, 2), fold=3), r'--fold 3 and --folds \(1, 2\): give one of them'),
    (dict(subset='esc20'), r"--subset"),
])
def test_bad_fold_settings_fail_before_anything_loads(kw, msg):
    with pytest.raises(ValueError, match=msg): CompareConfig(**kw).check()

def test_key_keeps_single_split_comparisons_resumable():
    "A comparison without --folds has the keys fastnorm 0.2 saved (so it resumes); one with --folds names them"
    assert 'folds' not in CompareConfig().key() and 'subset' not in CompareConfig().key() and CompareConfig().key()['fold'] == 1
    k = CompareConfig(folds=(1, 2), subset='esc10').key()
    assert k['folds'] == (1, 2) and k['subset'] == 'esc10' and 'fold' not in k
    assert CompareConfig(folds=(1, 2)).cv == (1, 2) and CompareConfig(fold=3).cv == (3,)

def test_missing_fold_and_fsdd_folds_are_errors(tiny_esc50, tmp_path):
    with pytest.raises(ValueError, match=r'fold 7 does not exist: the data has folds \[1, 2, 3, 4, 5\]'):
        resolve_data(str(tiny_esc50), (1, 7))
    assert resolve_data(str(tiny_esc50), 'all').folds == (1, 2, 3, 4, 5)
    d = tmp_path/'fsdd'; d.mkdir()
    for take in range(6): sf.write(d/f'1_ann_{take}.wav', np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match=r"--folds 1,2: .* FSDD's layout, which has no folds"): resolve_data(str(d), (1, 2))
    with pytest.raises(ValueError, match=r"--subset esc10: only a dataset in ESC-50's layout"): resolve_data(str(d), 1, subset='esc10')

@pytest.fixture
def esc10_marked(tiny_esc50, tmp_path):
    "tiny_esc50 with only its classes of target 0 and 1 marked esc10 (the column as text, as a hand-made csv may hold it)"
    d = tmp_path/'marked'
    shutil.copytree(tiny_esc50, d)
    df = pd.read_csv(d/'meta'/'esc50.csv')
    df['esc10'] = np.where(df['target'] < 2, 'True', 'False')
    df.to_csv(d/'meta'/'esc50.csv', index=False)
    return d

def test_subset_esc10_builds_a_problem_of_its_classes(esc10_marked):
    from fastnorm.data import esc50_dls, read_esc50_csv
    src = resolve_data(str(esc10_marked), 1, subset='esc10')
    full = read_esc50_csv(esc10_marked)
    assert len(src.items) == (full['target'] < 2).sum() == 20 and src.n_classes == 2
    dls = esc50_dls(esc10_marked, fold=1, subset='esc10', bs=4, sr=8000, num_workers=0)
    assert sorted(dls.vocab) == sorted(full.loc[full['target'] < 2, 'category'].unique()) and dls.c == 2
    assert len(dls.valid.items) == 4 and len(dls.train.items) == 16

def test_subset_errors_name_the_csv(esc10_marked):
    from fastnorm.data import read_esc50_csv
    csv = esc10_marked/'meta'/'esc50.csv'
    df = pd.read_csv(csv)
    df['esc10'] = 'False'
    df.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"esc50\.csv marks no clip esc10=True"): read_esc50_csv(esc10_marked, 'esc10')
    df.loc[3, 'esc10'] = 'maybe'
    df.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"esc50\.csv: column 'esc10' must be True or False, not 'maybe' \(row 5\)"):
        read_esc50_csv(esc10_marked, 'esc10')
    with pytest.raises(ValueError, match=r"subset 'esc20': .*esc50\.csv has no such subset column"):
        read_esc50_csv(esc10_marked, 'esc20')

@pytest.mark.slow
def test_cross_validation_rows_summary_and_resume(tiny_esc50, tmp_path):
    "Every (norm, run, fold) is a job: a fold column, a per-fold table, and a resume that trains only the missing jobs"
    cfg, out = tiny_cfg(tiny_esc50, norms=('none', 'channel'), folds=(1, 2), shifts=('gain:-20',)), tmp_path/'o'
    count = CountTraining(folds=True)
    count.stop_at = 3
    with pytest.raises(KeyboardInterrupt): run_comparison(cfg, out=out, cbs=[count], **quiet)
    kept = pd.read_csv(out/'results.csv')
    assert list(zip(kept['norm'], kept['run'], kept['fold'])) == [('none', 0, 1), ('channel', 0, 1)]
    count.stop_at = None
    res = run_comparison(cfg, out=out, resume=True, cbs=[count], **quiet)
    assert count.calls[3:] == [('none', 0, 2), ('channel', 0, 2)]  # only the missing fold was trained
    assert list(res.columns[:3]) == ['norm', 'run', 'fold'] and list(zip(res['norm'], res['fold'])) == [
        ('none', 1), ('channel', 1), ('none', 2), ('channel', 2)]
    assert res.iloc[:2].equals(kept)
    assert_counts(res['final_acc'])  # folds 1 and 2 both hold 8 clips
    assert sorted(p.name for p in (out/'models').iterdir()) == [
        'channel-run0-fold1.pt', 'channel-run0-fold2.pt', 'none-run0-fold1.pt', 'none-run0-fold2.pt']
    assert (out/'fold1'/'stats_channel.pt').is_file() and (out/'fold2'/'stats_channel.pt').is_file()
    md = (out/'summary.md').read_text()
    assert '2-fold cross-validation (folds 1-2: each validates once, the others train)' in md
    assert 'pair the models that share a seed and a validation fold' in md and '## Per validation fold' in md
    ch = res[res['norm'] == 'channel']['final_acc'].to_numpy()
    assert f"| channel | {ch[0]:.4f} | {ch[1]:.4f} | {ch.mean():.4f} |" in md
    assert '| channel | 2 |' in md  # n: one model per (run, fold)
    cur = pd.read_csv(out/'curves.csv')
    assert sorted(zip(cur['norm'], cur['fold'])) == sorted(zip(res['norm'], res['fold']))

@pytest.mark.slow
def test_statistics_of_each_split_come_from_its_training_folds_only(tiny_esc50, tmp_path):
    """The value test: fold 1's clips made 20 dB louder. The split validating on fold 1 must not see them (its
    statistics equal those of folds 2-5 computed independently); the split validating on fold 2 trains on them"""
    from fastnorm.audio import load_audio, AudioTensor
    from fastnorm.spec import MelSpec, spec_config
    from fastnorm.stats import StatsRecorder
    d = tmp_path/'loud1'
    shutil.copytree(tiny_esc50, d)
    df = pd.read_csv(d/'meta'/'esc50.csv')
    for f in df.loc[df['fold'] == 1, 'filename']:
        x, sr = sf.read(d/'audio'/f, dtype='float32')
        sf.write(d/'audio'/f, np.clip(10*x, -1, 1), sr, subtype='FLOAT')
    # `ast` fits its constants without a waveform normalization, so loudness reaches the statistics
    run_comparison(tiny_cfg(d, norms=('ast',), folds=(1, 2), epochs=1), out=tmp_path/'o', **quiet)
    mel = MelSpec(cfg=spec_config('quick'))
    def ref(folds):
        specs = [mel(AudioTensor(load_audio(d/'audio'/f, sr=16000)[0][None], sr=16000)).as_subclass(torch.Tensor) for f in df.loc[df['fold'].isin(folds), 'filename']]
        x = torch.cat(specs).double()
        return float(x.mean()), float(x.std())
    got = {k: StatsRecorder.load(tmp_path/'o'/f'fold{k}'/'stats_ast.pt') for k in (1, 2)}
    m1, s1 = ref([2, 3, 4, 5])
    assert float(got[1].mean) == pytest.approx(m1, abs=1e-3) and float(got[1].std) == pytest.approx(s1, abs=1e-3)
    m2, s2 = ref([1, 3, 4, 5])
    assert float(got[2].mean) == pytest.approx(m2, abs=1e-3)
    assert m2 - m1 > 3  # fold 1's 20 dB shows in the split that trains on it (dB units), not in the one it validates

def test_results_of_a_single_split_comparison_read_as_fold_1(tmp_path):
    "results.csv and curves.csv of fastnorm 0.2 (no fold column) resume as the rows of their one fold"
    pd.DataFrame(dict(norm=['none'], run=[0], seed=[0], final_acc=[.5])).to_csv(tmp_path/'results.csv', index=False)
    pd.DataFrame(dict(norm=['none'], run=[0], epoch=[1], accuracy=[.5])).to_csv(tmp_path/'curves.csv', index=False)
    assert list(read_table(tmp_path, 'results', fold=3).columns) == ['norm', 'run', 'fold', 'seed', 'final_acc']
    led = Ledger(tmp_path, ('none',), [], Ranks(), resume=True, fold=3)
    assert led.done == {('none', 0, 3)} and len(led.curves[0]) == 1

def test_summary_pairs_by_seed_and_fold():
    r = pd.DataFrame(dict(norm=['none']*4 + ['global']*4, run=[0, 0, 1, 1]*2, fold=[1, 2]*4, seed=[0, 0, 1, 1]*2,
                          final_acc=[.5, .6, .7, .8, .6, .6, .9, .9]))
    s = summarize(r, order=['none', 'global']).set_index('norm')
    assert s.loc['global', 'n_pairs'] == 4 and s.loc['global', 'diff'] == pytest.approx(np.mean([.1, 0, .2, .1]))

def test_comparison_plot_draws_float_noise_as_zero(tmp_path):
    "A change of 1e-9 is zero: no bar, and the change axis keeps a readable span instead of scaling to 1e-9"
    from fastnorm.study.report import summarize_shifts
    r = pd.DataFrame(dict(norm=['none', 'none', 'global', 'global'], run=[0, 1, 0, 1], seed=[0, 1, 0, 1],
                          final_acc=[.5, .6, .7, .8]))
    r['acc@gain:0'] = r['final_acc'] + 1e-9
    sh = summarize_shifts(r, ['gain:0'], order=['none', 'global'])
    fig = plot_comparison(r, summarize(r, order=['none', 'global']), tmp_path/'c.png', shift_summary=sh)
    change = fig.axes[1]
    assert [p.get_height() for p in change.patches] == [0., 0.]
    lo, hi = change.get_ylim()
    assert lo <= -.02 and hi >= .02 and (tmp_path/'c.png').stat().st_size > 0

def _upsampled(dest, files, sr=44100):
    "A folder in ESC-50's layout holding `files` of the 16 kHz ESC-10 copy upsampled to `sr`, as the real ESC-50 ships"
    from scipy.signal import resample_poly
    (dest/'audio').mkdir(parents=True)
    (dest/'meta').mkdir()
    df = pd.read_csv(ESC10/'meta'/'esc50.csv')
    df = df[df['filename'].isin(files)]
    for f in df['filename']:
        x, r = sf.read(ESC10/'audio'/f, dtype='float32')
        sf.write(dest/'audio'/f, np.clip(resample_poly(x, sr // 100, r // 100), -1, 1), sr, subtype='PCM_16')
    df.to_csv(dest/'meta'/'esc50.csv', index=False)
    return df

@needs(ESC10)
def test_real_rate_clips_are_resampled_once_into_the_cache(tmp_path):
    """ESC-50's 44.1 kHz clips (an upsampled copy of a few ESC-10 clips) resample into the feature cache once: the
    cached log-mels equal those of the 16 kHz originals, and training reads the cache, not the (read-only) folder"""
    from fastnorm.data import esc50_dls
    df = pd.read_csv(ESC10/'meta'/'esc50.csv')
    files = list(df[df['fold'].isin([1, 2])].groupby('fold').head(3)['filename'])
    _upsampled(tmp_path/'esc44', files)
    assert sf.info(tmp_path/'esc44'/'audio'/files[0]).samplerate == 44100
    (tmp_path/'esc44'/'audio').chmod(0o555)  # a dataset folder may be read-only: the cache lives in FASTNORM_HOME
    try:
        kw = dict(fold=1, spec='quick', bs=3, cache=True, progress=False, num_workers=0)
        hi, lo = esc50_dls(tmp_path/'esc44', **kw), esc50_dls(ESC10, **kw)
        xh = torch.stack([hi.train.dataset[i][0] for i in range(3)])
        names = [f.name for f in map(__import__('pathlib').Path, hi.train.items['path'])]
        idx = [list(lo.train.items['filename']).index(n) for n in names]
        xl = torch.stack([lo.train.dataset[i][0] for i in idx])
        assert xh.shape == xl.shape and xh.shape[-2] == 64  # the quick preset: 16 kHz, 64 mels
        err = (xh - xl).abs()
        assert float(err.median()) < .05 and float(err.mean()) < .2, (float(err.median()), float(err.mean()))
        from fastnorm.study.datasets import spec_cache
        assert spec_cache(hi.train).cfg.sr == 16000 and tmp_path not in spec_cache(hi.train).path.parents
        (tmp_path/'esc44'/'audio').rename(tmp_path/'esc44'/'gone')  # training must not need the clips any more
        xb, yb = hi.one_batch()
        assert xb.shape == (3, 1, 64, xl.shape[-1]) and torch.isfinite(xb).all()
    finally:
        for d in ('audio', 'gone'):
            if (tmp_path/'esc44'/d).exists(): (tmp_path/'esc44'/d).chmod(0o755)

@needs(ESC10)
@pytest.mark.slow
def test_esc10_five_folds_cli_resumes(tmp_path):
    "The issue's command at a tiny scale: the real ESC-10, 5 folds, interrupted, resumed, cross-validated"
    out = tmp_path/'o'
    args = [sys.executable, '-m', 'fastnorm', 'compare', '--data', str(ESC10), '--folds', '1-5', '--runs', '1',
            '--epochs', '1', '--norms', 'none,channel', '--shift', 'none', '--out', str(out), '--no-progress']
    first = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    res = pd.read_csv(out/'results.csv')
    assert sorted(zip(res['fold'], res['norm'])) == sorted((f, n) for f in range(1, 6) for n in ('none', 'channel'))
    assert_counts(res['final_acc'], n=80)  # 80 ESC-10 clips per fold
    # interrupted: the last two jobs' rows gone; --resume trains exactly those and gives the same table
    res.iloc[:-2].to_csv(out/'results.csv', index=False)
    again = subprocess.run(args + ['--resume'], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'resuming: 8 run(s) already in' in again.stdout and again.stdout.count(': accuracy') == 2
    res2 = pd.read_csv(out/'results.csv')
    assert res2.drop(columns='seconds').equals(res.drop(columns='seconds'))
    md = (out/'summary.md').read_text()
    assert '5-fold cross-validation (folds 1-5' in md and 'chance 0.100' in md and '| none | 5 |' in md

def test_float_noise_prints_as_zero():
    "In the summary table float noise prints as 0 (not -0.0000), a real difference keeps its sign, a missing value is –"
    from fastnorm.study.report import summary_markdown
    nan = float('nan')
    row = dict(n=2, mean=.5, std=-1e-12, ci95=nan, diff_ci95=nan, p_value=nan, n_pairs=2)
    summary = pd.DataFrame([{**row, 'norm': 'none', 'diff': nan}, {**row, 'norm': 'global', 'diff': -1e-12},
                            {**row, 'norm': 'freq', 'diff': -0.00005}])
    lines = summary_markdown(summary, legend={}).splitlines()
    assert '| none | 2 | 0.5000 | 0.0000 | – |  |  |' in lines
    assert '| global | 2 | 0.5000 | 0.0000 | – | +0.0000 ± – (n=2) | – |' in lines
    assert '| freq | 2 | 0.5000 | 0.0000 | – | -0.0001 ± – (n=2) | – |' in lines
