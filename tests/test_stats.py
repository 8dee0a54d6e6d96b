import socket
import pytest, torch
import torch.multiprocessing as mp
from fastnorm.spec import TensorSpec, SPEC_PRESETS
from fastnorm.stats import StatsRecorder, STATS_SCOPES

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
    r.update(torch.zeros(4, 2, 8, 10))
    r.update(torch.ones(3, 2, 8, 10))
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
        r.update(pad[:2], **{k: v[:2] for k, v in kw.items()})
        r.update(pad[2:], **{k: v[2:] for k, v in kw.items()})
        assert r.n == int(lengths.sum()) * 16
        assert rel(r.mean, m) < 1e-7 and rel(r.std, s) < 1e-7
    rc = StatsRecorder((0,3))
    rc.update(pad, lengths=lengths)  # per channel too
    assert rc.n == int(lengths.sum())
    assert rel(rc.mean, flat.mean(-1, keepdim=True)[None]) < 1e-7

def test_mask_with_unequal_counts_gives_count_tensor():
    x = torch.arange(12.).reshape(1, 1, 3, 4)
    mask = torch.tensor([[1,1,1,1],[1,1,0,0],[1,0,0,0]], dtype=torch.bool)[None, None]
    r = StatsRecorder((0,3))
    r.update(x, mask=mask)
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
    for x in xs:
        c.update(x)
        g.update(x)
    p = c.pool((1, 2))
    assert p.kept_shape == (1,1,1,1) and p.n == g.n
    assert rel(p.mean, g.mean) < 1e-12 and rel(p.std, g.std) < 1e-12

@pytest.mark.slow
def test_all_reduce_two_gloo_processes(tmp_path):
    from stats_dist_worker import run, make_batches
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
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
    import matplotlib
    matplotlib.use('Agg')
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
    bad = torch.zeros(4, 3, 4, 5)
    bad[2, 0, 1, 1] = float('nan')
    bad[3, 1, 0, 0] = float('inf')
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

def test_a_rejected_first_batch_leaves_the_recorder_new():
    r = StatsRecorder((0, 3))
    bad = torch.zeros(2, 1, 16, 20)
    bad[1, 0, 3, 4] = float('nan')
    with pytest.raises(ValueError, match=r'Batch 0 holds NaN or Inf values \(items \[1\]\)'): r.update(bad)
    r.update(torch.ones(2, 1, 8, 20))  # another shape is fine: nothing was recorded
    assert r.kept_shape == (1, 1, 8, 1) and r.n == 40

def test_plot_names_the_kept_axis():
    r = StatsRecorder((0, 2, 3)).update(torch.randn(4, 3, 8, 10))
    assert r.plot().axes[0].get_xlabel() == 'channel'
    r = StatsRecorder((0, 3)).update(torch.randn(4, 1, 8, 10))
    assert r.plot().axes[0].get_xlabel() == 'mel bin'

# ---- state: one state_dict/load_state_dict pair behind save/load, pickling and all_reduce ----
def test_pool_with_negative_dims_can_still_merge():
    xs = batches((8, 5, 3), dtype=torch.float64)
    a, b = StatsRecorder((0,3)), StatsRecorder((0,3))
    a.update(xs[0])
    b.update(xs[1])
    b.update(xs[2])
    full = StatsRecorder((0,2,3))
    for x in xs: full.update(x)
    p = a.pool(-2)
    assert p.red_dims == (0,2,3) and p.kept_shape == (1,1,1,1) == a.pool(2).kept_shape
    p.merge(b.pool((-2,)))  # a negative int dim still leaves a recorder that can merge
    assert p.n == full.n and rel(p.mean, full.mean) < 1e-12 and rel(p.std, full.std) < 1e-12
    p.update(xs[0])  # and can go on streaming
    with pytest.raises(ValueError, match=r'`red_dims` must be integer dims of a rank-4 tensor, at least one \(4 given\)'):
        a.pool(4)
    with pytest.raises(ValueError, match=r'`red_dims` must be .* \(\(\) given\)'): a.pool(())  # not every dim at once

def test_pickle_carries_the_state_not_the_work_buffer():
    import pickle, copy
    r = StatsRecorder((0,3))
    for x in batches(): r.update(x)
    assert '_buf' in r.__dict__  # the work buffer kept between batches
    d = pickle.dumps(r)
    assert len(d) < 4000  # 16 kept values x 3 float64 moments and metadata, not the batch-sized buffer (8x16x20 floats)
    for l in (pickle.loads(d), copy.deepcopy(r)):
        assert '_buf' not in l.__dict__ and l.cfg == CFG and l.n_batches == 3 and l.red_dims == (0,3)
        assert torch.equal(l.mean, r.mean) and torch.equal(l.count, r.count) and torch.equal(l.std, r.std)
        l.update(batches()[0])  # and goes on
    e = pickle.loads(pickle.dumps(StatsRecorder((0,-1))))  # an empty one too
    assert e.red_dims == (0,-1) and e.kept_shape is None and e.update(batches()[0]).red_dims == (0,3)

def test_state_dict_roundtrip_and_from_moments():
    r = StatsRecorder((0,2,3), unbiased=True)
    for x in batches(): r.update(x)
    s = r.state_dict()
    assert s['format'] == 'fastnorm.stats' and s['red_dims'] == [0,2,3] and s['kept_shape'] == [1,1,1,1] and s['unbiased']
    l = StatsRecorder.from_state_dict(s)
    assert torch.equal(l.var, r.var) and l.unbiased and l.cfg == r.cfg
    with pytest.raises(ValueError, match='Not a StatsRecorder state'): StatsRecorder().load_state_dict({'format': 'x'})
    m = StatsRecorder.from_moments(r.count, r.mean, r.var * (r.count - 1), (0,2,3), unbiased=True)
    assert torch.allclose(m.std, r.std, rtol=1e-12, atol=0) and m.kept_shape == r.kept_shape
    with pytest.raises(ValueError, match=r'size 1 in every one of `red_dims`=\(0,\)'): StatsRecorder.from_moments(*[torch.ones(2, 3)] * 3, (0,))
    with pytest.raises(ValueError, match='one shape'): StatsRecorder.from_moments(torch.ones(1, 3), torch.ones(1, 3), torch.ones(1, 2), (0,))

# ---- edge cases: int dims, mask with lengths, time_dim, merging different settings ----
def test_pool_with_a_positive_int_dim_gives_per_channel():
    xs = batches((8, 5), c=2, dtype=torch.float64)
    r, per_channel = StatsRecorder((0,3)), StatsRecorder((0,2,3))
    for x in xs:
        r.update(x)
        per_channel.update(x)
    p = r.pool(2)  # an int, like `red_dims`
    assert p.red_dims == (0,2,3) and p.kept_shape == (1,2,1,1) and p.n == per_channel.n == 13 * 16 * 20
    assert rel(p.mean, per_channel.mean) < 1e-12 and rel(p.std, per_channel.std) < 1e-12
    assert r.kept_shape == (1,2,16,1)  # pooling makes a new recorder and leaves this one alone

def test_mask_together_with_lengths_is_an_error():
    r = StatsRecorder((0,2,3))
    x = torch.zeros(2, 1, 4, 5)
    with pytest.raises(ValueError, match='Give `mask` or `lengths`, not both'):
        r.update(x, mask=torch.ones(2, 1, 1, 5, dtype=torch.bool), lengths=[5, 3])
    assert r.n == 0 and r.kept_shape is None  # nothing was recorded

def test_time_dim_zero_is_the_batch_dim_and_an_error():
    r = StatsRecorder((0,2,3), time_dim=0)
    with pytest.raises(ValueError, match='`time_dim` must not be the batch dim 0'): r.update(torch.zeros(2, 1, 4, 5), lengths=[5, 3])
    assert r.n == 0
    r.update(torch.ones(2, 1, 4, 5))  # without `lengths`, time_dim is not used
    assert r.n == 40

def test_lengths_count_along_another_time_dim():
    x = torch.arange(24.).reshape(2, 1, 3, 4)  # lengths along dim 2 (rows): item 0 keeps 1 row, item 1 keeps 3
    r = StatsRecorder((0,2,3), time_dim=2).update(x, lengths=[1, 3])
    kept = torch.cat([x[0, 0, :1].flatten(), x[1, 0].flatten()]).double()
    assert r.n == 16 and r.mean.item() == pytest.approx(kept.mean().item()) and r.std.item() == pytest.approx(kept.std(correction=0).item())

def test_merging_statistics_of_other_spectrogram_settings_is_an_error():
    a = StatsRecorder((0,3)).update(logmel(4))
    other = TensorSpec(logmel(4).as_subclass(torch.Tensor), cfg=SPEC_PRESETS['paper'])
    b = StatsRecorder((0,3)).update(other)
    n = a.n
    with pytest.raises(ValueError, match=r'Cannot merge statistics of spectrograms made with different settings'): a.merge(b)
    assert a.n == n and a.n_batches == 1  # left as it was
    with pytest.raises(ValueError, match=r'Cannot merge statistics with kept shape \[1, 1, 16, 1\] \(red_dims \(0, 3\)\) '
                                         r'into kept shape \[1, 1, 1, 1\]'):
        StatsRecorder((0,1,2,3)).update(logmel(2)).merge(a)
    with pytest.raises(ValueError, match='`other` must be a StatsRecorder \\(dict given\\)'): a.merge(a.state_dict())

def test_red_dims_become_non_negative_and_sorted_once_the_rank_is_known():
    r = StatsRecorder((0,-1))
    assert r.red_dims == (0,-1)  # as given until the first batch
    for x in batches(): r.update(x)
    assert r.red_dims == (0,3) and r.pool(red_dims=2).red_dims == (0,2,3)

def test_stats_scopes():
    assert STATS_SCOPES == {'global': (0,1,2,3), 'freq': (0,3)}
