import json
from pathlib import Path
import numpy as np, torch, pytest
from fastnorm.cache import SpecCache
from fastnorm.data import esc50_dls, read_esc50_csv
from fastnorm.spec import spec_config
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

def write_variants(src, dest):
    "New files, outside the dataset, from clip `src` (1 s): a copy, a 2.5 s clip whose middle second is `src`, a 0.4 s clip"
    import soundfile as sf
    x, sr = sf.read(src, dtype='float32')
    noise = np.random.default_rng(0).standard_normal(int(0.75 * sr)).astype(np.float32) * .05
    dest.mkdir(exist_ok=True)
    for name, y in (('copy', x), ('long', np.concatenate([noise, x, noise[::-1]])), ('short', x[:int(0.4 * sr)])):
        sf.write(dest/f'{name}.wav', y, sr, subtype='FLOAT')
    return [dest/'copy.wav', dest/'long.wav', dest/'short.wav']

@pytest.mark.parametrize('wave_norm', [False, True])
def test_files_not_in_the_cache_are_computed_like_training(tiny_esc50, tmp_path, wave_norm):
    from fastnorm.audio import AudioTensor
    kw = dict(bs=8, sr=8000, wave_norm=wave_norm, num_workers=0, progress=False)
    fly, cached = esc50_dls(tiny_esc50, **kw), esc50_dls(tiny_esc50, cache=True, **kw)
    src = read_esc50_csv(tiny_esc50).path[0]
    new = write_variants(src, tmp_path/'new')
    cache = cached.train.cache
    assert src in cache and not any(f in cache for f in new)
    for items in (new + [src], [str(f) for f in new] + [src], [AudioTensor.create(f, sr=8000) for f in new]):
        a, b = fly.test_dl(items).one_batch()[0], cached.test_dl(items).one_batch()[0]
        assert isinstance(b, TensorSpec) and b.shape == (len(items), 1, 64, 32) and b.cfg == a.cfg
        torch.testing.assert_close(b.as_subclass(torch.Tensor), a.as_subclass(torch.Tensor), rtol=1e-5, atol=1e-4)  # both ways agree
    orig = cache[src].as_subclass(torch.Tensor)
    for f in new[:2]:  # the copy, and the long clip centre-cropped to its middle second: the cached original
        torch.testing.assert_close(cache.spec(f).as_subclass(torch.Tensor), orig, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(cache.spec(new[2]).as_subclass(torch.Tensor), orig, atol=1)  # the short one is padded, not stretched
    with pytest.raises(ValueError, match=r'sr=16000 Hz but the spectrograms are made at 8000 Hz'):
        cache.compute(AudioTensor.create(new[0], sr=16000))
    with pytest.raises(ValueError, match=r'audio file \(str or Path\) or an AudioTensor \(int given\)'): cache.compute(3)

def test_the_memmap_opens_lazily_never_while_unpickling(tiny_esc50, tmp_path):
    import pickle, shutil
    files = read_esc50_csv(tiny_esc50).path[:4]
    c = SpecCache.build(files, spec_config('quick', sr=8000), 1.0, dest=tmp_path/'c', progress=False)
    assert '_data' not in c.__dict__ and repr(c).endswith('4 items of shape (1, 64, 32))')  # nothing opened yet
    want = c[files[1]]
    blob = pickle.dumps(c)
    shutil.rmtree(tmp_path/'c')  # a machine without the cache folder
    u = pickle.loads(blob)
    assert '_data' not in u.__dict__ and not u.available and files[1] in u and u.item_stats is None
    with pytest.raises(FileNotFoundError, match="feature cache's spectrograms are gone: .*data.npy"): u.data
    shutil.copytree(tiny_esc50, tmp_path/'copy')  # the file exists elsewhere: computed with the cache's settings
    torch.testing.assert_close(u.spec(tmp_path/'copy'/'audio'/Path(files[1]).name), want, rtol=1e-5, atol=1e-4)

def test_item_moments_of_the_cached_dataloader(tiny_esc50, tmp_path):
    dls = esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True, num_workers=0, progress=False)
    dl = dls.train
    m = dl.item_moments([3, 0])
    x = dl.do_batch([3, 0])[0].as_subclass(torch.Tensor).double()
    assert sorted(m) == ['count', 'm2', 'mean'] and m['mean'].shape == (2, 1, 64) and (m['count'] == 32).all()
    torch.testing.assert_close(m['mean'], x.mean(-1)); torch.testing.assert_close(m['m2'], x.var(-1, correction=0) * 32)
    assert dl.item_moments()['mean'].shape == (32, 1, 64)
    new = write_variants(read_esc50_csv(tiny_esc50).path[0], tmp_path/'new')
    assert dls.test_dl(new).item_moments() is None  # not in the cache

@pytest.mark.parametrize('kw, name', [(dict(duration=float('nan')), 'duration'), (dict(bs=float('nan')), 'bs'),
                                      (dict(bs=0), 'bs')])
def test_build_refuses_bad_arguments_naming_them(tiny_esc50, tmp_path, kw, name):
    files, cfg = read_esc50_csv(tiny_esc50)['path'], spec_config('quick', 8000)
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\((nan|0) given\)"):
        SpecCache.build(files, cfg, **{'duration': 1., **kw}, dest=tmp_path/'c', progress=False)
    assert not (tmp_path/'c').exists()
