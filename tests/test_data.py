import math, shutil, numpy as np, pandas as pd, soundfile as sf, torch, pytest
from fastnorm.data import *
from fastnorm.layouts import LAYOUTS, detect_layout
from fastnorm.spec import TensorSpec
from conftest import FSDD, needs

def copy_esc50(src, dst):
    shutil.copytree(src, dst); return dst

def test_dataloaders_on_embedded_dataset(tiny_esc50):
    dls = esc50_dls(tiny_esc50, fold=2, bs=8, spec='quick', sr=8000, num_workers=0)
    x, y = dls.one_batch()
    assert isinstance(x, TensorSpec) and x.shape == (8, 1, 64, 32) and x.cfg.sr == 8000
    assert len(dls.train_ds) == 32 and len(dls.valid_ds) == 8 and len(dls.vocab) == 4
    folds = pd.read_csv(tiny_esc50/'meta'/'esc50.csv').set_index('filename').fold
    assert all(folds[p.split('/')[-1]] == 2 for p in dls.valid_ds.items.path)

def test_wave_norm_runs_before_the_spectrogram(tiny_esc50):
    dls = esc50_dls(tiny_esc50, bs=8, sr=8000, wave_norm=True, num_workers=0)
    assert [type(t).__name__ for t in dls.valid.after_batch.fs] == ['AudioNormalize', 'MelSpec']
    raw = esc50_dls(tiny_esc50, bs=8, sr=8000, num_workers=0)
    assert [type(t).__name__ for t in raw.valid.after_batch.fs] == ['MelSpec']
    # per-clip gains of -40..-3 dBFS spread the raw clips' levels; normalized clips have unit rms, so levels come together
    a, b = raw.valid.one_batch()[0], dls.valid.one_batch()[0]
    assert a.mean((1, 2, 3)).std() > 1.3 * b.mean((1, 2, 3)).std()

def test_dblock_summary_and_one_batch(tiny_esc50):
    dblock, df = esc50_dblock(tiny_esc50, fold=1, sr=8000), read_esc50_csv(tiny_esc50)
    dblock.summary(df, bs=4)  # fastai's walk through the pipeline runs without an error
    dls = dblock.dataloaders(df, bs=4, num_workers=0)
    x, y = dls.one_batch()
    assert isinstance(x, TensorSpec) and x.cfg is not None and x.shape[:3] == (4, 1, x.cfg.n_mels) and torch.isfinite(x).all()
    assert y.shape == (4,) and 0 <= int(y.min()) and int(y.max()) < len(dls.vocab) == df.category.nunique()
    assert len(dls.valid_ds) == (df.fold == 1).sum() and len(dls.train_ds) == (df.fold != 1).sum()

def test_csv_missing_column(tiny_esc50, tmp_path):
    d = copy_esc50(tiny_esc50, tmp_path/'e')
    pd.read_csv(d/'meta'/'esc50.csv').drop(columns=['category']).to_csv(d/'meta'/'esc50.csv', index=False)
    with pytest.raises(ValueError, match=r"esc50.csv is missing column\(s\) \['category'\]"): read_esc50_csv(d)

def test_not_esc50_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="not in ESC-50's layout"): esc50_dls(tmp_path)

def test_missing_clip(tiny_esc50, tmp_path):
    d = copy_esc50(tiny_esc50, tmp_path/'e')
    next((d/'audio').glob('*.wav')).unlink()
    with pytest.raises(FileNotFoundError, match='1 clip\\(s\\) listed in .* are missing'): read_esc50_csv(d)

def test_fold_that_does_not_exist(tiny_esc50):
    with pytest.raises(ValueError, match=r'fold 7 does not exist: the data has folds \[1, 2, 3, 4, 5\]'):
        esc50_dls(tiny_esc50, fold=7, bs=4, sr=8000)

def test_batch_size_larger_than_training_set(tiny_esc50):
    with pytest.raises(ValueError, match=r'bs=64 is larger than the training set \(32 items\)'): esc50_dls(tiny_esc50, bs=64, sr=8000)

def test_esc50_offline_fails_fast_with_advice(monkeypatch):
    import fastai.data.external as ext
    def offline(*a, **k): raise OSError('Name or service not known')
    monkeypatch.setattr(ext, 'untar_data', offline)
    with pytest.raises(RuntimeError, match=r"(?s)Could not get ESC-50.*local copy.*synth_esc50"): esc50()

def test_esc50_download_path_finds_the_dataset_folder(monkeypatch, tiny_esc50, tmp_path):
    import fastai.data.external as ext
    shutil.copytree(tiny_esc50, tmp_path/'master'/'ESC-50-master')  # what unpacking the repository archive gives
    got = []
    monkeypatch.setattr(ext, 'untar_data', lambda url, *a, **k: got.append(url) or tmp_path/'master')
    assert esc50() == tmp_path/'master'/'ESC-50-master' and got[0].endswith('.zip')

def test_esc50_local_copy(tiny_esc50):
    assert esc50(tiny_esc50) == tiny_esc50

def make_fsdd(d, speakers=('ann', 'bob'), takes=range(8), digits=range(3)):
    d.mkdir()
    for s in speakers:
        for t in takes:
            for g in digits: sf.write(d/f'{g}_{s}_{t}.wav', np.random.default_rng(t).standard_normal(2000).astype(np.float32)*.1, 8000)
    (d/'README.txt').write_text('not audio')
    return d

def test_fsdd_items_and_splits(tmp_path):
    df = fsdd_items(make_fsdd(tmp_path/'fsdd'))
    assert len(df) == 48 and set(df.label) == {'0', '1', '2'} and df['take'].max() == 7
    tr, va = FSDDSplitter('take')(df)
    assert set(df['take'].iloc[va]) == {0, 1, 2, 3, 4} and set(df['take'].iloc[tr]) == {5, 6, 7}
    tr, va = FSDDSplitter('speaker', test_speaker='bob')(df)
    assert set(df.speaker.iloc[va]) == {'bob'} and set(df.speaker.iloc[tr]) == {'ann'}
    with pytest.raises(ValueError, match="test_speaker 'eve' does not exist"): FSDDSplitter('speaker', test_speaker='eve')(df)
    with pytest.raises(ValueError, match='holds no FSDD recordings'): fsdd_items(tmp_path)

@needs(FSDD)
def test_real_fsdd_avmnist_split():
    df = fsdd_items(FSDD)
    tr, va = FSDDSplitter('take')(df)
    assert len(df) == 2000 and len(va) == 200 and len(tr) == 1800
    dls = fsdd_dls(FSDD, bs=16, num_workers=0)
    x, y = dls.one_batch()
    assert x.shape == (16, 1, 64, 32) and len(dls.vocab) == 10

def test_class_folders(tmp_path):
    for split in ('train', 'valid'):
        for lbl in ('cat', 'dog'):
            (tmp_path/split/lbl).mkdir(parents=True)
            for i in range(3): sf.write(tmp_path/split/lbl/f'{i}.wav', np.zeros(4000, np.float32), 8000)
    df = folder_items(tmp_path)
    assert len(df) == 12 and df.is_valid.sum() == 6 and set(df.label) == {'cat', 'dog'}
    dls = folder_dls(tmp_path, bs=2, sr=8000, num_workers=0)
    assert len(dls.valid_ds) == 6 and dls.vocab == ['cat', 'dog'] and torch.isfinite(dls.one_batch()[0]).all()

def test_the_posts_datablock_on_the_raw_csv(tiny_esc50):
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')  # as the post and fastaudio's tutorial read it: no `path` column
    assert 'path' not in df.columns
    ref = esc50_dls(tiny_esc50, fold=2, bs=8, sr=8000, num_workers=0)
    for cache in (False, True):
        dls = esc50_dblock(tiny_esc50, fold=2, sr=8000, cache=cache, progress=False).dataloaders(df, bs=8, num_workers=0)
        assert len(dls.train_ds) == 32 and len(dls.valid_ds) == 8 and dls.vocab == ref.vocab
        for a, b in zip(ref.valid, dls.valid):
            torch.testing.assert_close(b[0].as_subclass(torch.Tensor), a[0].as_subclass(torch.Tensor), rtol=1e-5, atol=1e-4)
            assert torch.equal(b[1], a[1])
    sub = df[df.category.isin(dls.vocab[:3])][['filename', 'fold', 'category']]  # any DataFrame with these columns, e.g. ESC-10's rows
    d3 = esc50_dblock(tiny_esc50, fold=2, sr=8000).dataloaders(sub, bs=4, num_workers=0)
    assert len(d3.train_ds) + len(d3.valid_ds) == 30 and len(d3.vocab) == 3 and d3.one_batch()[0].shape == (4, 1, 64, 32)

def test_a_missing_file_in_the_dataframe_is_named(tiny_esc50):
    from fastnorm.norm import FreqSpecNorm
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')
    bad = pd.concat([df, df.iloc[:1].assign(filename='gone-1.wav', fold=1)])  # fold 1: validation
    dls = esc50_dblock(tiny_esc50, sr=8000).dataloaders(bad, bs=8, num_workers=0)
    with pytest.raises(FileNotFoundError, match=r'Audio file not found: .*audio/gone-1\.wav'): list(dls.valid)
    bad = pd.concat([df, df.iloc[:1].assign(filename='gone-2.wav', fold=2)])  # training: the statistics' pass meets it at once
    with pytest.raises(FileNotFoundError, match=r'gone-2\.wav'):
        esc50_dblock(tiny_esc50, sr=8000, batch_tfms=[FreqSpecNorm()]).dataloaders(bad, bs=8, num_workers=0)

def test_detect_layout_tells_each_layout(tiny_esc50, tmp_path):
    assert detect_layout(tiny_esc50) == ('esc50', tiny_esc50)
    fsdd = make_fsdd(tmp_path/'fsdd', speakers=('ann',), takes=range(1), digits=range(2))
    assert detect_layout(fsdd) == ('fsdd', fsdd)
    (tmp_path/'corpus').mkdir()
    rec = make_fsdd(tmp_path/'corpus'/'recordings', speakers=('ann',), takes=range(1), digits=range(1))
    assert detect_layout(tmp_path/'corpus') == ('fsdd', rec)  # FSDD's repository keeps them in recordings/
    (tmp_path/'cls'/'dog').mkdir(parents=True)
    sf.write(tmp_path/'cls'/'dog'/'a.FLAC', np.zeros(800, np.float32), 8000)
    assert detect_layout(tmp_path/'cls') == ('folders', tmp_path/'cls')
    assert detect_layout(tmp_path/'cls', allowed='folders') == ('folders', tmp_path/'cls')

def test_detect_layout_errors(tiny_esc50, tmp_path):
    (tmp_path/'junk').mkdir()
    (tmp_path/'junk'/'notes.txt').write_text('no audio')
    with pytest.raises(ValueError, match=r"--data .*junk is not in a layout fastnorm reads here: expected ESC-50's: "
                       r"meta/esc50.csv .* or FSDD's: .* or class folders: <label>/\*.wav"):
        detect_layout(tmp_path/'junk', what='--data')
    with pytest.raises(ValueError, match=r"expected FSDD's: [^;]*\(it is in the 'esc50' layout\)$"):
        detect_layout(tiny_esc50, allowed=('fsdd',))
    (tmp_path/'cls'/'dog').mkdir(parents=True)
    sf.write(tmp_path/'cls'/'dog'/'a.wav', np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match=r"expected ESC-50's: meta/esc50.csv and the clips in audio/ or FSDD's: [^(]*$"):
        detect_layout(tmp_path/'cls', allowed=('esc50', 'fsdd'))  # audio in class folders: not a layout read here
    with pytest.raises(FileNotFoundError, match=r'noise folder .*nowhere: no such folder'):
        detect_layout(tmp_path/'nowhere', what='noise folder')
    with pytest.raises(FileNotFoundError, match=r'a\.wav: not a folder'): detect_layout(tmp_path/'cls'/'dog'/'a.wav')
    with pytest.raises(ValueError, match=r"`allowed` must be one of \('esc50', 'fsdd', 'folders'\) \('csv' given\)"):
        detect_layout(tiny_esc50, allowed=('esc50', 'csv'))

def test_the_dataloader_helpers_share_one_documented_signature():
    "The shared arguments are written (and documented) once and delegated: the signature still shows each default"
    import inspect
    from fastcore.docments import docments
    shared = dict(bs=32, spec='quick', wave_norm=False, batch_tfms=None, cache=False, progress=True)
    own = {esc50_dls: dict(fold=1, sr=None, duration=None), fsdd_dls: dict(by='take', sr=8000, duration=1.0),
           folder_dls: dict(valid_pct=0.2, seed=42, sr=None, duration=None),
           esc50_dblock: dict(fold=1, sr=None, duration=None)}
    for f, defaults in own.items():
        params = inspect.signature(f).parameters
        want = {**({k: v for k, v in shared.items() if k != 'bs'} if f is esc50_dblock else shared), **defaults}
        assert {k: params[k].default for k in want} == want, f.__name__
        assert ('kwargs' in params) == (f is not esc50_dblock)  # the loaders pass the rest on to `dataloaders`
        missing = [k for k, v in docments(f, args_kwargs=True).items() if k != 'return' and not v]
        assert not missing, (f.__name__, missing)
    assert docments(esc50_dls)['bs'] == docments(folder_dls)['bs'] == 'items per batch'

def test_the_dataloader_helpers_check_their_arguments(tiny_esc50):
    with pytest.raises(TypeError, match='label_col'): esc50_dblock(tiny_esc50, label_col='target')
    with pytest.raises(ValueError, match=r'`bs` must be an integer >= 1 \(0 given\)'): esc50_dls(tiny_esc50, bs=0)
    with pytest.raises(ValueError, match=r"`by` must be one of \('take', 'speaker'\) \('fold' given\)"):
        FSDDSplitter('fold')

@pytest.mark.parametrize('call, name', [
    (lambda p: esc50_dls(p, bs=8, sr=8000, duration=math.nan), 'duration'),
    (lambda p: esc50_dblock(p, duration=-1.), 'duration'),
    (lambda p: esc50_dls(p, bs=math.nan), 'bs'),
    (lambda p: check_batch_size(10, math.nan), 'bs'),
    (lambda p: audio_dblock(None, None, math.nan), 'duration'),
    (lambda p: esc50(timeout=math.nan), 'timeout'),
])
def test_nan_is_refused_naming_the_argument(tiny_esc50, call, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\(-?\w+\.?\d* given\)"): call(tiny_esc50)

def test_folder_dls_checks_valid_pct(tmp_path):
    for lbl in ('cat', 'dog'):
        (tmp_path/lbl).mkdir()
        for i in range(3): sf.write(tmp_path/lbl/f'{i}.wav', np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match=r'`valid_pct` must be a finite number in \[0, 1\] \(nan given\)'):
        folder_dls(tmp_path, valid_pct=math.nan)
