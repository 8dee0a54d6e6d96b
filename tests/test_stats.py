import socket
import pytest, torch
import torch.multiprocessing as mp
from fastnorm.spec import TensorSpec, SPEC_PRESETS
from fastnorm.stats import StatsRecorder, STATS_KINDS
from fastnorm.dlstats import compute_stats, stats_pipeline, stats_items
from fastnorm.norm import ChannelSpecNorm, add_spec_norm

CFG = SPEC_PRESETS['quick']

def logmel(bs, f=16, t=20, c=1, seed=0, dtype=torch.float32):
    "log-mel-like data: around -60 dB with per-bin offsets from -90 to -30"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(bs, c, f, t, generator=g, dtype=torch.float64) * 8 - 60 + torch.linspace(-30, 30, f, dtype=torch.float64)[:, None]
    return TensorSpec(x.float(), cfg=CFG) if dtype == torch.float32 else x.to(dtype)  # TensorSpec is always float32

def batches(sizes=(8, 8, 5), **kw): return [logmel(b, seed=i, **kw) for i, b in enumerate(sizes)]

def ref(xs, dims, correction=0):
    "float64 two-pass reference"
    a = torch.cat([x.as_subclass(torch.Tensor) for x in xs]).double()
    return a.mean(dims, keepdim=True), a.std(dims, keepdim=True, correction=correction)

def rel(a, b): return float(((a - b).abs() / b.abs()).max())

@pytest.mark.parametrize('dims', [(0,1,2,3), (0,3), (0,2,3), (0,)])
def test_matches_two_pass_reference(dims):
    xs = batches((8, 8, 5, 1, 13))  # any batch sizes, ragged last batch
    r = StatsRecorder(dims)
    for x in xs: r.update(x)
    m, s = ref(xs, dims)
    assert r.mean.shape == m.shape and r.mean.dtype == torch.float64
    assert rel(r.mean, m) < 1e-7 and rel(r.std, s) < 1e-7
    assert r.n == 35 * 16 * 20 // int(torch.tensor(m.shape).prod()) and r.n_batches == 5

def test_float64_batches_are_exact_and_unbiased_option():
    xs = batches(dtype=torch.float64)
    r = StatsRecorder((0,3), unbiased=True)
    for x in xs: r.update(x)
    m, s = ref(xs, (0,3), correction=1)
    assert rel(r.mean, m) < 1e-13 and rel(r.std, s) < 1e-13

def test_n_counts_reduced_elements_and_ragged_batches():
    r = StatsRecorder((0,2,3))
    r.update(torch.zeros(4, 2, 8, 10)); r.update(torch.ones(3, 2, 8, 10))
    assert r.n == 7 * 8 * 10 and r.mean.shape == (1, 2, 1, 1)
    assert torch.allclose(r.mean, torch.full((1,2,1,1), 3/7, dtype=torch.float64))
    assert torch.allclose(r.std, torch.full((1,2,1,1), (3/7*4/7)**.5, dtype=torch.float64))

def test_mask_and_lengths_ignore_padding():
    items = [logmel(1, t=t, seed=t)[0] for t in (20, 7, 13, 20, 3)]
    lengths = torch.tensor([x.shape[-1] for x in items])
    pad = torch.full((5, 1, 16, 20), float('nan'))  # padding never counts, even NaN
    for i, x in enumerate(items): pad[i, ..., :x.shape[-1]] = x
    flat = torch.cat([x.as_subclass(torch.Tensor).double() for x in items], -1)
    m, s = flat.mean().reshape(1,1,1,1), flat.std(correction=0).reshape(1,1,1,1)
    for kw in (dict(lengths=lengths), dict(mask=torch.arange(20)[None, None, None] < lengths[:, None, None, None])):
        r = StatsRecorder((0,2,3))
        r.update(pad[:2], **{k: v[:2] for k, v in kw.items()}); r.update(pad[2:], **{k: v[2:] for k, v in kw.items()})
        assert r.n == int(lengths.sum()) * 16
        assert rel(r.mean, m) < 1e-7 and rel(r.std, s) < 1e-7
    rc = StatsRecorder((0,3)); rc.update(pad, lengths=lengths)  # per channel too
    assert rc.n == int(lengths.sum())
    assert rel(rc.mean, flat.mean(-1, keepdim=True)[None]) < 1e-7

def test_mask_with_unequal_counts_gives_count_tensor():
    x = torch.arange(12.).reshape(1, 1, 3, 4)
    mask = torch.tensor([[1,1,1,1],[1,1,0,0],[1,0,0,0]], dtype=torch.bool)[None, None]
    r = StatsRecorder((0,3)); r.update(x, mask=mask)
    assert r.n.flatten().tolist() == [4., 2., 1.]
    assert r.mean.flatten().tolist() == [1.5, 4.5, 8.]

def test_merge_equals_single_pass():
    xs = batches((8, 5, 8, 3))
    a, b, full = StatsRecorder((0,3)), StatsRecorder((0,3)), StatsRecorder((0,3))
    for x in xs[:2]: a.update(x)
    for x in xs[2:]: b.update(x)
    for x in xs: full.update(x)
    a.merge(b)
    assert a.n == full.n and a.n_batches == 4
    assert rel(a.mean, full.mean) < 1e-12 and rel(a.std, full.std) < 1e-12
    assert StatsRecorder((0,3)).merge(b).n == b.n  # into an empty recorder
    with pytest.raises(ValueError, match='Cannot merge'): a.merge(StatsRecorder((0,1,2,3)).update(xs[0]))

def test_pool_gives_exact_global_from_channel():
    xs = batches(dtype=torch.float64)
    c, g = StatsRecorder((0,3)), StatsRecorder((0,1,2,3))
    for x in xs: c.update(x); g.update(x)
    p = c.pool((1, 2))
    assert p.kept_shape == (1,1,1,1) and p.n == g.n
    assert rel(p.mean, g.mean) < 1e-12 and rel(p.std, g.std) < 1e-12

def test_all_reduce_two_gloo_processes(tmp_path):
    from stats_dist_worker import run, make_batches
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    mp.spawn(run, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    full = StatsRecorder((0,3))
    for x in make_batches(): full.update(x)
    for rank in (0, 1):
        d = torch.load(tmp_path/f'rank{rank}.pt')
        assert d['n'] == full.n and d['nb'] == 6
        assert float((d['mean'] - full.mean).abs().max()) < 1e-12 and float((d['std'] - full.std).abs().max()) < 1e-12

def test_all_reduce_needs_process_group():
    with pytest.raises(ValueError, match='torch.distributed'): StatsRecorder().update(torch.zeros(2,1,3,4)).all_reduce()

def test_save_load_roundtrip_with_metadata(tmp_path):
    import fastnorm
    r = StatsRecorder((0,3))
    for x in batches(): r.update(x)
    p = r.save(tmp_path/'sub'/'stats.pt')
    assert [f.name for f in p.parent.iterdir()] == ['stats.pt']  # written atomically, no temp file left
    d = torch.load(p, weights_only=True)
    assert d['version'] == fastnorm.__version__ and d['cfg'] == CFG.to_dict() and d['kept_shape'] == [1, 1, 16, 1] and d['red_dims'] == [0, 3]
    l = StatsRecorder.load(p)
    assert l.cfg == CFG and l.n == r.n and l.kept_shape == r.kept_shape and l.n_batches == 3
    assert torch.equal(l.mean, r.mean) and torch.equal(l.std, r.std)
    l.update(batches()[0])  # a loaded recorder can go on
    with pytest.raises(ValueError, match='kept dim 2'): l.update(logmel(2, f=8))
    with pytest.raises(ValueError, match='other spectrogram settings'): l.update(TensorSpec(torch.zeros(2,1,16,5), cfg=CFG.replace(n_mels=16)))
    torch.save({'a': 1}, tmp_path/'other.pt')
    with pytest.raises(ValueError, match='does not hold fastnorm statistics'): StatsRecorder.load(tmp_path/'other.pt')

def test_plot_returns_figure():
    import matplotlib; matplotlib.use('Agg')
    from matplotlib.figure import Figure
    import matplotlib.pyplot as plt
    for dims in [(0,3), (0,1,2,3)]:
        r = StatsRecorder(dims).update(logmel(4))
        fig = r.plot(title='t')
        assert isinstance(fig, Figure) and len(fig.axes) == 2
        plt.close(fig)

def test_errors():
    r = StatsRecorder((0,2,3))
    with pytest.raises(ValueError, match='seen no data'): r.mean
    with pytest.raises(ValueError, match='rank 3'): r.update(torch.zeros(3, 4, 5))
    r.update(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match='Batch 1 has rank 3'): r.update(torch.zeros(3, 4, 5))
    with pytest.raises(ValueError, match='kept dim 1 has size 2'): r.update(torch.zeros(2, 2, 4, 5))
    r.update(torch.zeros(1, 3, 8, 9))  # reduced dims may change
    bad = torch.zeros(4, 3, 4, 5); bad[2, 0, 1, 1] = float('nan'); bad[3, 1, 0, 0] = float('inf')
    with pytest.raises(ValueError, match=r'Batch 2 holds NaN or Inf values \(items \[2, 3\]\)'): r.update(bad)
    assert r.n_batches == 2  # the bad batch was not counted
    with pytest.raises(ValueError, match='floating point'): r.update(torch.zeros(2, 3, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match='one length per item'): r.update(torch.zeros(2, 3, 4, 5), lengths=[1, 2, 3])
    with pytest.raises(ValueError, match='bool tensor'): r.update(torch.zeros(2, 3, 4, 5), mask=torch.ones(2, 1, 1, 5))
    with pytest.raises(ValueError, match='does not broadcast'): r.update(torch.zeros(2, 3, 4, 5), mask=torch.ones(2, 1, 1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='red_dims'): StatsRecorder((0, 0))
    with pytest.raises(ValueError, match='red_dims'): StatsRecorder((0, 5)).update(torch.zeros(2, 3))

def test_zero_variance_gives_zero_std_not_nan():
    r = StatsRecorder((0,3)).update(torch.full((3, 1, 4, 6), -100.))
    assert torch.equal(r.std, torch.zeros(1, 1, 4, 1, dtype=torch.float64))

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_stats_stay_on_gpu():
    xs = batches()
    r = StatsRecorder((0,3))
    for x in xs: r.update(x.cuda())
    m, s = ref(xs, (0,3))
    assert r.mean.device.type == 'cuda' and rel(r.mean.cpu(), m) < 1e-7 and rel(r.std.cpu(), s) < 1e-7

def test_stats_on_batch_device():
    r = StatsRecorder().update(torch.zeros(2, 1, 3, 4))
    assert r.mean.device == r.std.device == torch.device('cpu')

# ---- compute_stats over a DataLoader ----
@pytest.fixture(scope='module')
def dls(tiny_esc50):
    from fastnorm.data import esc50_dls
    return esc50_dls(tiny_esc50, bs=8, sr=8000)

def all_train_x(dl):
    "every training item once, through the stats pipeline, by hand"
    return [dl.after_batch.fs[0](dl.do_batch([dl.do_item(i)]))[0] for i in range(len(dl.dataset))]

def test_compute_stats_covers_the_whole_training_set(dls):
    xs = all_train_x(dls.train)
    assert dls.train.drop_last and dls.train.shuffle  # compute_stats must still see every item once
    for kind, dims in (('global', (0,1,2,3)), ('channel', (0,3))):
        r = compute_stats(dls, kind=kind, progress=False)
        m, s = ref(xs, dims)
        assert r.n == len(xs) * 32 * (64 if kind == 'global' else 1) and r.cfg == xs[0].cfg
        assert rel(r.mean, m) < 1e-6 and rel(r.std, s) < 1e-6

def test_compute_stats_skips_normalization_already_in_after_batch(dls):
    before = compute_stats(dls.train, kind='channel', progress=False)
    d2 = add_spec_norm(dls, kind='channel', stats=before)
    try:
        assert any(isinstance(t, ChannelSpecNorm) for t in d2.train.after_batch.fs)
        assert not any(isinstance(t, ChannelSpecNorm) for t in stats_pipeline(d2.train))
        after = compute_stats(d2.train, kind='channel', progress=True)
        assert torch.equal(after.mean, before.mean) and torch.equal(after.std, before.std)
        x, _ = d2.train.one_batch()  # while iterating normally still normalizes
        assert float(x.abs().mean()) < 3
    finally:
        for dl in d2.loaders: dl.after_batch.fs = dl.after_batch.fs.filter(lambda t: not isinstance(t, ChannelSpecNorm))

def test_compute_stats_frac_and_n_batches(dls):
    full = compute_stats(dls, kind='global', progress=False)
    half = compute_stats(dls, kind='global', frac=0.5, seed=1, progress=False)
    assert half.n_batches == 2 and half.n == 16 * 32 * 64 and not torch.equal(half.mean, full.mean)
    again = compute_stats(dls, kind='global', frac=0.5, seed=1, progress=False)
    assert torch.equal(again.mean, half.mean)  # the seed fixes the choice
    assert compute_stats(dls, kind='global', n_batches=1, progress=False).n_batches == 1
    with pytest.raises(ValueError, match='`frac`'): compute_stats(dls, frac=0)
    with pytest.raises(ValueError, match='`kind`'): compute_stats(dls, kind='bin')
    with pytest.raises(ValueError, match='`n_batches`'): compute_stats(dls, n_batches=0)

def test_compute_stats_on_plain_iterables():
    xs = batches()
    r = compute_stats([(x, 0) for x in xs], red_dims=(0,3), progress=False)
    m, s = ref(xs, (0,3))
    assert rel(r.mean, m) < 1e-7 and r.n_batches == 3
    assert compute_stats(xs, n_batches=2, progress=False).n_batches == 2

def test_compute_stats_restores_the_dataloader_even_on_error(dls):
    dl = dls.train
    before = (dl.after_batch, dl.shuffle, dl.drop_last, dl.n, 'get_idxs' in dl.__dict__)
    compute_stats(dl, progress=False)
    class Boom(Exception): pass
    orig = StatsRecorder.update
    try:
        StatsRecorder.update = lambda self, b, **kw: (_ for _ in ()).throw(Boom())
        with pytest.raises(Boom): compute_stats(dl, progress=False)
    finally: StatsRecorder.update = orig
    assert (dl.after_batch, dl.shuffle, dl.drop_last, dl.n, 'get_idxs' in dl.__dict__) == before
    assert len(list(dl)) == 4  # 32 items, bs 8, drop_last: still the training loader

def test_compute_stats_on_cached_dataloader(tiny_esc50, dls):
    from fastnorm.data import esc50_dls
    cached = esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True)
    a, b = compute_stats(cached, kind='channel', progress=False), compute_stats(dls, kind='channel', progress=False)
    assert a.n == b.n and rel(a.mean, b.mean) < 1e-5 and rel(a.std, b.std) < 1e-4

# ---- compute_stats from a feature cache's per-item statistics ----
@pytest.fixture(scope='module')
def cached_dls(tiny_esc50):
    from fastnorm.data import esc50_dls
    return esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True)

def streamed64(dl, red_dims, chosen):
    "The streaming pass by hand over the same items and batches, on float64 batches (so it is exact too)"
    r = StatsRecorder(red_dims)
    for i in range(0, len(chosen), dl.bs): r.update(dl.do_batch(chosen[i:i+dl.bs])[0].as_subclass(torch.Tensor).double())
    return r

@pytest.mark.parametrize('kw', [{}, dict(frac=0.5, seed=1), dict(n_batches=3), dict(frac=0.5, seed=2, n_batches=1)])
@pytest.mark.parametrize('kind', ['global', 'channel'])
def test_compute_stats_on_cache_merges_item_stats(cached_dls, kind, kw, monkeypatch):
    dl = cached_dls.train
    slow = compute_stats(dl, kind=kind, progress=False, cache_stats=False, **kw)
    def no_batches(self, *a, **k): raise AssertionError("the cached fast path read a batch")
    monkeypatch.setattr(StatsRecorder, 'update', no_batches)
    fast = compute_stats(cached_dls, kind=kind, progress=False, **kw)
    monkeypatch.undo()
    assert (fast.n, fast.n_batches, fast.kept_shape, fast.cfg, fast.red_dims) == (slow.n, slow.n_batches, slow.kept_shape, slow.cfg, slow.red_dims)
    assert torch.equal(fast.count, slow.count) and fast.mean.dtype == torch.float64 and fast.device == slow.device
    assert rel(fast.mean, slow.mean) < 1e-6 and rel(fast.std, slow.std) < 1e-6  # the pass sums float32 batches
    ref64 = streamed64(dl, STATS_KINDS[kind], stats_items(dl, kw.get('frac', 1.), kw.get('n_batches'), kw.get('seed', 0)))
    assert fast.n == ref64.n and rel(fast.mean, ref64.mean) < 1e-12 and rel(fast.std, ref64.std) < 1e-12
    u = compute_stats(dl, kind=kind, progress=False, unbiased=True, **kw)
    assert torch.allclose(u.var, fast.var * fast.n / (fast.n - 1), rtol=1e-12, atol=0)

def test_compute_stats_on_cache_streams_when_a_transform_comes_first(tiny_esc50, cached_dls):
    from fastai.data.transforms import Transform
    from fastnorm.data import esc50_dls
    class Shift(Transform):
        order = 50
        def encodes(self, x:TensorSpec): return x + 10
    shifted = esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True, batch_tfms=[Shift()])
    assert type(shifted.train).__name__ == 'CachedSpecDL' and stats_pipeline(shifted.train)
    calls = []
    orig = StatsRecorder.update
    def counting(self, b, **k): calls.append(1); return orig(self, b, **k)
    StatsRecorder.update = counting
    try: r = compute_stats(shifted, kind='channel', progress=False)
    finally: StatsRecorder.update = orig
    plain = compute_stats(cached_dls, kind='channel', progress=False)
    assert len(calls) == 4 and r.n == plain.n
    assert float((r.mean - plain.mean - 10).abs().max()) < 1e-4 and rel(r.std, plain.std) < 1e-5

def test_compute_stats_on_cache_streams_when_time_is_kept(cached_dls):
    r = compute_stats(cached_dls, red_dims=(0,1,2), progress=False)  # per-item statistics reduce over time: no use here
    assert r.kept_shape == (1,1,1,32) and torch.equal(r.mean, compute_stats(cached_dls, red_dims=(0,1,2), progress=False, cache_stats=False).mean)

def test_compute_stats_on_cache_without_item_stats_streams(tiny_esc50, tmp_path, cached_dls):
    import shutil
    from fastnorm.cache import SpecCache
    from fastnorm.data import esc50_dls
    shutil.copytree(cached_dls.train.cache.path, tmp_path/'old'); (tmp_path/'old'/'stats.npz').unlink()  # as a cache of format 1
    old = SpecCache(tmp_path/'old')
    assert old.item_stats is None
    r = compute_stats(esc50_dls(tiny_esc50, bs=8, sr=8000, cache=old), kind='channel', progress=False)
    fast = compute_stats(cached_dls, kind='channel', progress=False)
    assert r.n == fast.n and rel(r.mean, fast.mean) < 1e-6 and rel(r.std, fast.std) < 1e-6

def test_a_rejected_first_batch_leaves_the_recorder_new():
    r = StatsRecorder((0, 3))
    bad = torch.zeros(2, 1, 16, 20); bad[1, 0, 3, 4] = float('nan')
    with pytest.raises(ValueError, match=r'Batch 0 holds NaN or Inf values \(items \[1\]\)'): r.update(bad)
    r.update(torch.ones(2, 1, 8, 20))  # another shape is fine: nothing was recorded
    assert r.kept_shape == (1, 1, 8, 1) and r.n == 40

def test_plot_names_the_kept_axis():
    r = StatsRecorder((0, 2, 3)).update(torch.randn(4, 3, 8, 10))
    assert r.plot().axes[0].get_xlabel() == 'channel'
    r = StatsRecorder((0, 3)).update(torch.randn(4, 1, 8, 10))
    assert r.plot().axes[0].get_xlabel() == 'mel bin'
