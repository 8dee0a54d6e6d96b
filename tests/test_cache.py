import json, numpy as np, torch, pytest
from fastnorm.cache import SpecCache
from fastnorm.data import esc50_dls, read_esc50_csv, spec_config
from fastnorm.spec import TensorSpec

def test_cache_gives_the_same_batches_as_on_the_fly(tiny_esc50):
    kw = dict(fold=1, bs=8, sr=8000, wave_norm=True, num_workers=0)
    fly, cached = esc50_dls(tiny_esc50, **kw), esc50_dls(tiny_esc50, cache=True, **kw)
    for a, b in zip(fly.valid, cached.valid):
        assert isinstance(b[0], TensorSpec) and b[0].cfg == a[0].cfg
        torch.testing.assert_close(b[0], a[0], rtol=1e-5, atol=1e-4)
        assert torch.equal(b[1], a[1])
    assert sum(len(b[0]) for b in cached.train) == 32 and fly.vocab == cached.vocab

def test_cache_is_reused_and_keyed_by_settings(tiny_esc50, tmp_path):
    files = read_esc50_csv(tiny_esc50).path[:10]
    cfg = spec_config('quick', sr=8000)
    c1 = SpecCache.build(files, cfg, 1.0, dest=tmp_path/'c', progress=False)
    assert c1.data.shape == (10, 1, 64, 32) and len(c1) == 10
    assert isinstance(c1[files[3]], TensorSpec) and c1[files[3]].cfg == cfg
    mtime = (tmp_path/'c'/'data.npy').stat().st_mtime_ns
    SpecCache.build(files, cfg, 1.0, dest=tmp_path/'c', progress=False)
    assert (tmp_path/'c'/'data.npy').stat().st_mtime_ns == mtime  # reused
    assert SpecCache.key(files, cfg, 1.0, False) != SpecCache.key(files, cfg.replace(n_mels=32), 1.0, False)
    assert SpecCache.key(files, cfg, 1.0, False) != SpecCache.key(files, cfg, 1.0, True)
    c2 = SpecCache.build(files, cfg.replace(n_mels=32), 1.0, dest=tmp_path/'c', progress=False)  # other settings: rebuilt
    assert c2.data.shape == (10, 1, 32, 32) and json.loads((tmp_path/'c'/'meta.json').read_text())['cfg']['n_mels'] == 32
    with pytest.raises(KeyError, match='not in the feature cache'): c2['nope.wav']

def test_cache_keeps_per_item_stats(tiny_esc50, tmp_path):
    files = read_esc50_csv(tiny_esc50).path[:10]
    c = SpecCache.build(files, spec_config('quick', sr=8000), 1.0, dest=tmp_path/'c', bs=4, progress=False)
    assert sorted(f.name for f in (tmp_path/'c').iterdir()) == ['data.npy', 'index.csv', 'meta.json', 'stats.npz']
    st, x = c.item_stats, np.asarray(c.data, dtype=np.float64)
    assert all(st[k].shape == (10, 1, 64) and st[k].dtype == torch.float64 for k in ('count', 'mean', 'm2'))
    assert (st['count'] == 32).all()
    np.testing.assert_allclose(st['mean'].numpy(), x.mean(-1), rtol=1e-13)
    np.testing.assert_allclose(st['m2'].numpy(), ((x - x.mean(-1, keepdims=True))**2).sum(-1), rtol=1e-12)
    import pickle
    assert '_item_stats' not in pickle.loads(pickle.dumps(c)).__dict__  # workers load them only if they need them

def test_cache_never_replaces_a_folder_it_did_not_make(tiny_esc50, tmp_path):
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'precious.txt').write_text('x')
    files = read_esc50_csv(tiny_esc50).path[:4]
    with pytest.raises(FileExistsError, match='not a fastnorm feature cache'):
        SpecCache.build(files, spec_config('quick', sr=8000), 1.0, dest=tmp_path/'mine', progress=False)
    assert (tmp_path/'mine'/'precious.txt').read_text() == 'x'

def test_waveform_transforms_with_a_cache_are_an_error(tiny_esc50):
    from fastnorm.waveaug import AddNoise
    from fastnorm.audio import AudioNormalize
    for tfm in (AddNoise(snr_db=(0, 10)), AudioNormalize()):
        with pytest.raises(ValueError, match=rf"\['{type(tfm).__name__}'\] work on the waveform.*cache=False"):
            esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True, batch_tfms=[tfm])

def test_cache_and_results_get_the_usual_permissions(tiny_esc50, tmp_path):
    import os, stat
    from fastnorm.utils import atomic_path
    umask = os.umask(0o022); os.umask(umask)
    c = SpecCache.build(read_esc50_csv(tiny_esc50).path[:4], spec_config('quick', sr=8000), 1.0, dest=tmp_path/'c', progress=False)
    assert stat.S_IMODE(os.stat(c.path).st_mode) == 0o777 & ~umask
    with atomic_path(tmp_path/'r.csv') as tmp: tmp.write_text('a\n')
    assert stat.S_IMODE(os.stat(tmp_path/'r.csv').st_mode) == 0o666 & ~umask
