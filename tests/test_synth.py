import math
import numpy as np, pandas as pd, soundfile as sf, pytest
from fastnorm.synth import synth_esc50, SYNTH_CLASSES
from fastnorm.data import ESC50_COLUMNS

def test_layout_and_csv(tiny_esc50):
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')
    assert list(df.columns) == ESC50_COLUMNS and len(df) == 40
    assert sorted(df.fold.unique()) == [1, 2, 3, 4, 5] and (df.groupby('fold').size() == 8).all()
    assert df.category.nunique() == 4 and (df.groupby('category').target.nunique() == 1).all()
    for r in df.itertuples():
        assert r.filename == f'{r.fold}-{r.src_file}-{r.take}-{r.target}.wav' and (tiny_esc50/'audio'/r.filename).is_file()
    info = sf.info(tiny_esc50/'audio'/df.filename[0])
    assert info.samplerate == 8000 and info.frames == 8000 and info.channels == 1

def test_gain_spread_is_wide(tiny_esc50):
    peaks = [np.abs(sf.read(f)[0]).max() for f in sorted((tiny_esc50/'audio').glob('*.wav'))]
    assert 20*np.log10(max(peaks)/min(peaks)) >= 25  # drawn from -40..-3 dBFS

def test_deterministic_and_reused(tmp_path):
    a = synth_esc50(tmp_path/'a', seed=3, n_classes=2, clips_per_class=5, seconds=.5, sr=8000)
    b = synth_esc50(tmp_path/'b', seed=3, n_classes=2, clips_per_class=5, seconds=.5, sr=8000)
    c = synth_esc50(tmp_path/'c', seed=4, n_classes=2, clips_per_class=5, seconds=.5, sr=8000)
    fa = sorted((a/'audio').glob('*.wav'))
    assert all((a/'audio'/f.name).read_bytes() == (b/'audio'/f.name).read_bytes() for f in fa)
    assert any(f.read_bytes() != (c/'audio'/f.name).read_bytes() for f in fa)
    mtime = fa[0].stat().st_mtime_ns
    synth_esc50(tmp_path/'a', seed=3, n_classes=2, clips_per_class=5, seconds=.5, sr=8000)
    assert fa[0].stat().st_mtime_ns == mtime  # reused, not remade

def test_incomplete_dataset_is_regenerated(tmp_path):
    kw = dict(seed=0, n_classes=2, clips_per_class=5, seconds=.5, sr=8000)
    d = synth_esc50(tmp_path/'d', **kw)
    victim = sorted((d/'audio').glob('*.wav'))[3]; victim.unlink()
    synth_esc50(tmp_path/'d', **kw)
    assert victim.is_file() and len(list((d/'audio').glob('*.wav'))) == 10

def test_default_location_under_fastnorm_home(monkeypatch, tmp_path):
    monkeypatch.setenv('FASTNORM_HOME', str(tmp_path))
    d = synth_esc50(n_classes=2, clips_per_class=5, seconds=.5, sr=8000)
    assert d.parent == tmp_path/'data' and (d/'meta'/'esc50.csv').is_file()

def test_an_empty_fastnorm_home_is_the_default_not_the_working_folder(monkeypatch, tmp_path):
    from fastnorm.utils import fastnorm_home
    monkeypatch.setenv('HOME', str(tmp_path))
    monkeypatch.setenv('FASTNORM_HOME', '')
    assert fastnorm_home() == tmp_path/'.fastnorm'
    monkeypatch.delenv('FASTNORM_HOME')
    assert fastnorm_home() == tmp_path/'.fastnorm'

def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='n_classes'): synth_esc50(tmp_path/'x', n_classes=len(SYNTH_CLASSES) + 1)
    with pytest.raises(ValueError, match='clips_per_class'): synth_esc50(tmp_path/'x', clips_per_class=3)
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'precious.txt').write_text('x')
    with pytest.raises(FileExistsError, match='not a fastnorm synthetic dataset'): synth_esc50(tmp_path/'mine', clips_per_class=5)

@pytest.mark.parametrize('name', ['n_classes', 'clips_per_class', 'seconds', 'sr'])
def test_nan_is_refused_naming_the_argument(tmp_path, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\(nan given\)"):
        synth_esc50(tmp_path/'x', **{name: math.nan})
    assert not (tmp_path/'x').exists()
