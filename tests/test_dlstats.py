"compute_stats over a fastai DataLoader (and a feature cache's per-item moments), also under torch.distributed"
import socket
import pytest, torch
import torch.multiprocessing as mp
from fastnorm.spec import TensorSpec
from fastnorm.stats import StatsRecorder, STATS_SCOPES
from fastnorm.dlstats import compute_stats, stats_pipeline, stats_items, dist_shard
from fastnorm.norm import FreqSpecNorm, add_spec_norm
from test_stats import batches, ref, rel

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
    for scope, dims in (('global', (0,1,2,3)), ('freq', (0,3))):
        r = compute_stats(dls, scope=scope, progress=False)
        m, s = ref(xs, dims)
        assert r.n == len(xs) * 32 * (64 if scope == 'global' else 1) and r.cfg == xs[0].cfg
        assert rel(r.mean, m) < 1e-6 and rel(r.std, s) < 1e-6

def test_compute_stats_skips_normalization_already_in_after_batch(dls):
    before = compute_stats(dls.train, scope='freq', progress=False)
    d2 = add_spec_norm(dls, norm='freq', stats=before)
    try:
        assert any(isinstance(t, FreqSpecNorm) for t in d2.train.after_batch.fs)
        assert not any(isinstance(t, FreqSpecNorm) for t in stats_pipeline(d2.train))
        after = compute_stats(d2.train, scope='freq', progress=True)
        assert torch.equal(after.mean, before.mean) and torch.equal(after.std, before.std)
        x, _ = d2.train.one_batch()  # while iterating normally still normalizes
        assert float(x.abs().mean()) < 3
    finally:
        for dl in d2.loaders: dl.after_batch.fs = dl.after_batch.fs.filter(lambda t: not isinstance(t, FreqSpecNorm))

def test_compute_stats_frac_and_n_batches(dls):
    full = compute_stats(dls, scope='global', progress=False)
    half = compute_stats(dls, scope='global', frac=0.5, seed=1, progress=False)
    assert half.n_batches == 2 and half.n == 16 * 32 * 64 and not torch.equal(half.mean, full.mean)
    again = compute_stats(dls, scope='global', frac=0.5, seed=1, progress=False)
    assert torch.equal(again.mean, half.mean)  # the seed fixes the choice
    assert compute_stats(dls, scope='global', n_batches=1, progress=False).n_batches == 1
    with pytest.raises(ValueError, match='`frac`'): compute_stats(dls, frac=0)
    with pytest.raises(ValueError, match=r"`scope` must be one of \('global', 'freq'\) \('bin' given\)"):
        compute_stats(dls, scope='bin')
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
    a, b = compute_stats(cached, scope='freq', progress=False), compute_stats(dls, scope='freq', progress=False)
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
@pytest.mark.parametrize('scope', ['global', 'freq'])
def test_compute_stats_on_cache_merges_item_stats(cached_dls, scope, kw, monkeypatch):
    dl = cached_dls.train
    slow = compute_stats(dl, scope=scope, progress=False, cache_stats=False, **kw)
    def no_batches(self, *a, **k): raise AssertionError("the cached fast path read a batch")
    monkeypatch.setattr(StatsRecorder, 'update', no_batches)
    fast = compute_stats(cached_dls, scope=scope, progress=False, **kw)
    monkeypatch.undo()
    assert (fast.n, fast.n_batches, fast.kept_shape, fast.cfg, fast.red_dims) == (slow.n, slow.n_batches, slow.kept_shape, slow.cfg, slow.red_dims)
    assert torch.equal(fast.count, slow.count) and fast.mean.dtype == torch.float64 and fast.device == slow.device
    assert rel(fast.mean, slow.mean) < 1e-6 and rel(fast.std, slow.std) < 1e-6  # the pass sums float32 batches
    ref64 = streamed64(dl, STATS_SCOPES[scope], stats_items(dl, kw.get('frac', 1.), kw.get('n_batches'), kw.get('seed', 0)))
    assert fast.n == ref64.n and rel(fast.mean, ref64.mean) < 1e-12 and rel(fast.std, ref64.std) < 1e-12
    u = compute_stats(dl, scope=scope, progress=False, unbiased=True, **kw)
    assert torch.allclose(u.var, fast.var * fast.n / (fast.n - 1), rtol=1e-12, atol=0)

def test_stats_items_chooses_whole_batches(cached_dls):
    "The reference above takes its items from `stats_items`: here its choice is checked against literal expectations"
    dl = cached_dls.train
    n, bs = len(dl.dataset), dl.bs
    assert (n, bs) == (32, 8) and stats_items(dl) == list(range(32))
    assert stats_items(dl, n_batches=3) == list(range(24)) and stats_items(dl, n_batches=0) == []
    half = stats_items(dl, frac=0.5, seed=1)  # ceil(0.5 * 4 batches) = 2 random batches of 8 distinct items
    assert len(half) == 16 == len(set(half)) and set(half) < set(range(32)) and half != sorted(half)
    assert stats_items(dl, frac=0.5, seed=1) == half and stats_items(dl, frac=0.5, seed=2) != half
    assert len(stats_items(dl, frac=0.01)) == 8  # at least one batch

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
    def counting(self, b, **k):
        calls.append(1)
        return orig(self, b, **k)
    StatsRecorder.update = counting
    try: r = compute_stats(shifted, scope='freq', progress=False)
    finally: StatsRecorder.update = orig
    plain = compute_stats(cached_dls, scope='freq', progress=False)
    assert len(calls) == 4 and r.n == plain.n
    assert float((r.mean - plain.mean - 10).abs().max()) < 1e-4 and rel(r.std, plain.std) < 1e-5

def test_compute_stats_on_cache_streams_when_time_is_kept(cached_dls):
    r = compute_stats(cached_dls, red_dims=(0,1,2), progress=False)  # per-item statistics reduce over time: no use here
    assert r.kept_shape == (1,1,1,32) and torch.equal(r.mean, compute_stats(cached_dls, red_dims=(0,1,2), progress=False, cache_stats=False).mean)

def test_compute_stats_on_cache_without_item_stats_streams(tiny_esc50, tmp_path, cached_dls):
    import shutil
    from fastnorm.cache import SpecCache
    from fastnorm.data import esc50_dls
    shutil.copytree(cached_dls.train.cache.path, tmp_path/'old')
    (tmp_path/'old'/'stats.npz').unlink()  # as a cache of format 1
    old = SpecCache(tmp_path/'old')
    assert old.item_stats is None
    r = compute_stats(esc50_dls(tiny_esc50, bs=8, sr=8000, cache=old), scope='freq', progress=False)
    fast = compute_stats(cached_dls, scope='freq', progress=False)
    assert r.n == fast.n and rel(r.mean, fast.mean) < 1e-6 and rel(r.std, fast.std) < 1e-6


# ---- under torch.distributed: each rank reads its shard, then all-reduce ----
def test_dist_shard_takes_whole_batches_round_robin(monkeypatch):
    import fastnorm.dlstats as D
    assert dist_shard(range(7), 2) == list(range(7))  # no process group: everything
    monkeypatch.setattr(D, '_rank_world', lambda: (1, 2))
    assert dist_shard(range(11), 3) == [3, 4, 5, 9, 10]  # batches [3,4,5] and the ragged last one [9,10]
    monkeypatch.setattr(D, '_rank_world', lambda: (0, 2))
    assert dist_shard(range(11), 3) == [0, 1, 2, 6, 7, 8]

@pytest.mark.slow
def test_two_gloo_processes_give_the_stats_of_one(tiny_esc50, tmp_path):
    from dlstats_dist_worker import run, all_stats
    one = all_stats(tiny_esc50)  # also builds the cache the workers then reuse
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.spawn(run, args=(2, port, str(tiny_esc50), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path/f'rank{r}.pt') for r in (0, 1)]
    assert set(ranks[0]) == set(one) and len(one) == 10
    for k, want in one.items():
        for got in (r[k] for r in ranks):
            assert got['n_batches'] == want['n_batches'] and torch.equal(got['count'], want['count']), k
            assert float((got['mean'] - want['mean']).abs().max()) < 1e-12 and float((got['std'] - want['std']).abs().max()) < 1e-12, k
    assert one[False, 'n_batches']['n_batches'] == 3 and one[False, 'global']['n_batches'] == 6  # 32 items in batches of 6

def test_the_patched_dataloader_pickles_for_spawned_workers(dls, monkeypatch):
    "DataLoader workers started by spawn (macOS, Windows, torch.multiprocessing) pickle the DataLoader compute_stats iterates"
    import pickle
    seen, orig = [], StatsRecorder.update
    def update(self, b, **kw):
        if not seen: seen.append(pickle.loads(pickle.dumps(dls.train)).get_idxs())
        return orig(self, b, **kw)
    monkeypatch.setattr(StatsRecorder, 'update', update)
    compute_stats(dls, n_batches=2, progress=False)
    assert seen == [list(range(16))]

def test_progress_bar_by_default(capsys):
    xs = batches((2,) * 5)
    a = compute_stats(xs)  # `progress=True`, as everywhere in fastnorm
    assert '5/5' in capsys.readouterr().out
    assert torch.equal(a.mean, compute_stats(xs, progress=False).mean)
    assert capsys.readouterr().out == ''

# ---- the statistics options, declared once (`StatsOptions`) ----
def test_normalizers_pass_their_statistics_options_on(dls, monkeypatch):
    "`FreqSpecNorm(frac=...)` and `add_spec_norm(..., n_batches=...)` reach `compute_stats` as they were given"
    import fastnorm.norm as N
    from fastnorm.dlstats import StatsOptions
    seen, real = [], N.compute_stats
    monkeypatch.setattr(N, 'compute_stats', lambda dl, **kw: seen.append(kw) or real(dl, **kw))
    FreqSpecNorm(frac=0.5, seed=3, progress=False).setup(dls.train)
    add_spec_norm(dls, 'global', n_batches=1, progress=False)
    assert [{k: v for k, v in kw.items() if k != 'red_dims'} for kw in seen] == [
        dict(frac=0.5, n_batches=None, seed=3, progress=False), dict(frac=1.0, n_batches=1, seed=0, progress=False)]
    assert StatsOptions(frac=1, n_batches=2) == StatsOptions(1., 2) and type(StatsOptions(frac=1).frac) is float
    for bad, msg in ((dict(frac=0), r'`frac` must be a finite number in \(0, 1\] \(0 given\)'),
                     (dict(n_batches=0), r'`n_batches` must be an integer >= 1 \(0 given\)')):
        for make in (lambda kw: StatsOptions(**kw), lambda kw: FreqSpecNorm(**kw),
                     lambda kw: add_spec_norm(dls, 'instance', **kw), lambda kw: compute_stats(dls, **kw)):
            with pytest.raises(ValueError, match=msg): make(bad)
    with pytest.raises(TypeError, match='sync'): FreqSpecNorm(sync='local')  # gone: no process group, no all-reduce

def test_a_normalizer_pickled_with_its_options_one_by_one_still_computes_them(dls):
    "fastnorm <= 0.2 kept frac, n_batches, seed, progress (and sync) as attributes: such a pickle loads and works"
    import pickle
    old = FreqSpecNorm(progress=False)
    state = {k: v for k, v in old.__dict__.items() if k != 'opts'}
    state.update(frac=0.5, n_batches=None, seed=3, progress=False, sync='local')
    old.__dict__.clear()
    old.__dict__.update(state)
    t = pickle.loads(pickle.dumps(old))
    t.setup(dls.train)
    want = compute_stats(dls.train, scope='freq', frac=0.5, seed=3, progress=False)
    assert torch.equal(t.mean, want.mean.float()) and torch.equal(t.std, want.std.float())
