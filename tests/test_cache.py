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
