"""Benchmarks of fastnorm.stats, each a ratio measured in one run: accuracy against a float64 two-pass reference, update cost
against the normalization post's StatsRecorder, and `compute_stats` overhead over plain iteration of a cached DataLoader.

    python bench/stats.py            # full size (a few minutes on a 2-core CPU)
    python bench/stats.py --quick    # a smoke run
"""
from __future__ import annotations
import math, platform, statistics, sys, time
import torch
from fastcore.script import call_parse
from fastnorm import __version__
from fastnorm.stats import StatsRecorder, STATS_SCOPES
from fastnorm.dlstats import compute_stats

class PostStatsRecorder:
    "The normalization post's recorder, faithfully: per-batch float32 torch mean and (Bessel-corrected) std, pooled by item count"
    def __init__(self, red_dims=(0,2,3)):
        self.red_dims = red_dims
        self.nobservations = 0
    def update(self, data):
        if self.nobservations == 0:
            self.mean = data.mean(dim=self.red_dims, keepdim=True)
            self.std = data.std(dim=self.red_dims, keepdim=True)
            self.nobservations = data.shape[0]
            self.ndimensions = data.shape[1]
        else:
            if data.shape[1] != self.ndimensions: raise ValueError('Data dims do not match previous observations.')
            newmean = data.mean(dim=self.red_dims, keepdim=True)
            newstd = data.std(dim=self.red_dims, keepdim=True)
            m = self.nobservations * 1.0
            n = data.shape[0]
            tmp = self.mean
            self.mean = m/(m+n)*tmp + n/(m+n)*newmean
            self.std = m/(m+n)*self.std**2 + n/(m+n)*newstd**2 + m*n/(m+n)**2 * (tmp - newmean)**2
            self.std = torch.sqrt(self.std)
            self.nobservations += n


def logmel_batch(i, bs, shape=(1,128,431)):
    "Log-mel-like float32 batch `i`: around -60 dB, per-bin offsets from -90 to -30, a level per item, 10 dB noise"
    g = torch.Generator().manual_seed(1000 + i)
    c, f, t = shape
    off = torch.linspace(-90, -30, f)[:, None]
    level = torch.randn(bs, 1, 1, 1, generator=g) * 6
    return (off + level + torch.randn(bs, c, f, t, generator=g) * 10).float()

def batch_sizes(n_items, bs): return [bs] * (n_items // bs) + ([n_items % bs] if n_items % bs else [])

def rel_err(a, ref): return float(((a.double() - ref).abs() / ref.abs()).max())

def accuracy(n_items, bs, shape):
    "Max relative error of mean and std against a float64 two-pass reference, ours and the post's, global and per channel"
    sizes = batch_sizes(n_items, bs)
    ours = {k: StatsRecorder(d) for k, d in STATS_SCOPES.items()}
    post = {k: PostStatsRecorder(d) for k, d in STATS_SCOPES.items()}
    per_batch = {k: [] for k in STATS_SCOPES}  # for the `frac` study
    s1 = {k: 0. for k in STATS_SCOPES}
    for i, b in enumerate(sizes):
        x = logmel_batch(i, b, shape)
        for k, d in STATS_SCOPES.items():
            ours[k].update(x)
            post[k].update(x)
            per_batch[k].append(StatsRecorder(d).update(x))
            s1[k] = s1[k] + x.double().sum(d, keepdim=True)
    n = {k: n_items * math.prod(shape) / math.prod(ours[k].kept_shape[1:]) for k in STATS_SCOPES}
    mean = {k: s1[k] / n[k] for k in STATS_SCOPES}
    ss = {k: 0. for k in STATS_SCOPES}
    for i, b in enumerate(sizes):  # second pass: squared deviations from the exact mean
        x = logmel_batch(i, b, shape).double()
        for k, d in STATS_SCOPES.items(): ss[k] = ss[k] + ((x - mean[k])**2).sum(d, keepdim=True)
    std = {k: (ss[k] / n[k]).sqrt() for k in STATS_SCOPES}
    res = {}
    for k in STATS_SCOPES:
        res[k] = dict(ours_mean=rel_err(ours[k].mean, mean[k]), ours_std=rel_err(ours[k].std, std[k]),
                      post_mean=rel_err(post[k].mean, mean[k]), post_std=rel_err(post[k].std, std[k]))
    return res, per_batch, mean, std

def frac_errors(per_batch, mean, std, fracs=(0.05, 0.1, 0.2, 0.5, 1.0), seeds=range(10)):
    "Max relative error of per-channel std and of mean (in std units) from a random fraction of the batches, averaged over seeds"
    import random
    out = {}
    for f in fracs:
        em, es = [], []
        for s in seeds:
            rs = list(per_batch)
            random.Random(s).shuffle(rs)
            r = StatsRecorder((0,3))
            for b in rs[:max(1, math.ceil(f * len(rs)))]: r.merge(b)
            em.append(float(((r.mean - mean).abs() / std).max()))
            es.append(rel_err(r.std, std))
        out[f] = (statistics.mean(em), statistics.mean(es))
    return out

def timeit(fn, reps):
    "Fastest of `reps` runs: on a shared machine the minimum is the run least disturbed by other processes"
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)

def update_speed(reps, bs=64, shape=(1,128,431)):
    "Time of one `update` on a `[64,1,128,431]` batch (fastest of `reps`, ours and the post's interleaved)"
    x = logmel_batch(0, bs, shape)
    res = {}
    for k, d in STATS_SCOPES.items():
        o, p = StatsRecorder(d).update(x), PostStatsRecorder(d)
        p.update(x)  # warm, and past the first-batch branch
        to, tp = [], []
        for _ in range(reps):
            to.append(timeit(lambda: o.update(x), 1))
            tp.append(timeit(lambda: p.update(x), 1))
        res[k] = (min(to), min(tp))
    return res

def overhead(reps, clips_per_class, bs, seconds=5.0, cache=True):
    "compute_stats over a DataLoader against plain iteration of the same DataLoader (same items, order and batches)"
    from fastnorm.synth import synth_esc50
    from fastnorm.data import esc50_dls
    path = synth_esc50(clips_per_class=clips_per_class, seconds=seconds)
    dls = esc50_dls(path, bs=bs, cache=cache, num_workers=0)
    dl = dls.train.new(shuffle=False, drop_last=False)
    def plain():
        for b in dl: pass
    def stats(): return compute_stats(dl, scope='freq', progress=False)
    def stream(): return compute_stats(dl, scope='freq', progress=False, cache_stats=False)  # the pass over the batches
    fast, slow = stats(), stream()  # warm: the memmap pages, the cache index and its per-item statistics
    plain()
    tp, ts, tst = [], [], []
    for _ in range(reps):
        tp.append(timeit(plain, 1))
        ts.append(timeit(stats, 1))
        if cache: tst.append(timeit(stream, 1))
    x = dl.one_batch()[0]
    diff = max(rel_err(fast.mean, slow.mean), rel_err(fast.std, slow.std))
    return dict(plain=min(tp), stats=min(ts), stream=min(tst) if cache else None, diff=diff, n=len(dl.dataset), nb=len(dl),
                shape=tuple(x.shape), type=type(dl).__name__)

@call_parse
def main(quick:bool=False, # a small smoke run, numbers not for BENCHMARKS.md
         n_items:int=1650, # items of the accuracy set (1,650 in batches of 64: the last is ragged)
         reps:int=20, # timing repetitions (the fastest is reported)
         threads:int=0, # torch threads; 0: torch's default (all cores)
        ):
    "Run the statistics benchmarks and print their ratios"
    if quick: n_items, reps = 130, 3
    if threads: torch.set_num_threads(threads)
    torch.manual_seed(0)
    print(f"fastnorm {__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    acc, per_batch, mean, std = accuracy(n_items, 64, (1,128,431))
    print(f"\n## accuracy: {n_items} items [1,128,431] float32 in batches of 64, max relative error vs float64 two-pass")
    for k, r in acc.items():
        print(f"{k:8s} ours: mean {r['ours_mean']:.1e} std {r['ours_std']:.1e} | post: mean {r['post_mean']:.1e} std {r['post_std']:.1e} "
              f"| std error ratio post/ours {r['post_std']/max(r['ours_std'], 1e-300):.0f}x")
    print("\n## per-channel error against the fraction of batches (mean over 10 seeds): max |mean err|/std, max rel std err")
    for f, (em, es) in frac_errors(per_batch['freq'], mean['freq'], std['freq']).items():
        print(f"frac {f:4.2f}: mean {em:.1e}  std {es:.1e}")
    print(f"\n## update cost on [64,1,128,431] batches (fastest of {reps})")
    for k, (to, tp) in update_speed(reps).items():
        print(f"{k:8s} ours {to*1e3:6.2f} ms  post {tp*1e3:6.2f} ms  speedup {tp/to:.2f}x")
    o = overhead(max(3, reps // 2), 5 if quick else 40, 32, 1.0 if quick else 5.0)
    tp = o['plain']
    print(f"\n## compute_stats overhead: {o['type']} over synth_esc50 (5 s clips, 'quick' preset), {o['n']} items, {o['nb']} batches of "
          f"{o['shape']} (fastest of {max(3, reps // 2)})")
    print(f"plain iteration {tp*1e3:.2f} ms, compute_stats(scope='freq') {o['stats']*1e3:.2f} ms (the cache's per-item statistics "
          f"merged): overhead {(o['stats']/tp - 1)*100:+.1f}%")
    print(f"  the streaming pass over the same batches (cache_stats=False) {o['stream']*1e3:.2f} ms: overhead {(o['stream']/tp - 1)*100:+.1f}%; "
          f"max relative difference of mean/std between the two {o['diff']:.1e} (the pass sums float32 batches)")
    o = overhead(3, 5 if quick else 40, 32, 1.0 if quick else 5.0, cache=False)
    tp = o['plain']
    print(f"same without the cache ({o['type']}: decoding and MelSpec per batch, fastest of 3): plain iteration {tp*1e3:.0f} ms, "
          f"compute_stats {o['stats']*1e3:.0f} ms: overhead {(o['stats']/tp - 1)*100:+.1f}%")
