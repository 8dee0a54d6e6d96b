"""Statistics of a fastai `DataLoader`: `compute_stats` streams the spectrograms a normalizer will see (or merges a
feature cache's per-item moments), each rank its own shard under `torch.distributed`; `StatsOptions`, the options that
choose its batches, declared once for it and the normalizers that call it.
One layer above `stats` and `cache`, below `norm`."""
from __future__ import annotations
import math, random
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from fastcore.meta import delegates
from fasttransform import Pipeline
from .stats import StatsRecorder, STATS_SCOPES
from .cache import CachedSpecDL
from .checks import check_choice, check_frac, check_int

__all__ = ['NORM_ORDER', 'StatsOptions', 'takes_stats_options', 'stats_pipeline', 'stats_items', 'dist_shard',
           'compute_stats']

NORM_ORDER = 99  # fastai's `Normalize.order`: statistics describe what the transforms before it make

@dataclass
class StatsOptions:
    """Which batches `compute_stats` reads, and whether it shows it: the keyword arguments `compute_stats`,
    `SpecNormalize` and `add_spec_norm` take (`frac=`, `n_batches=`, `seed=`, `progress=`), checked here once"""
    frac:float=1.0 # fraction of the batches to use, drawn at random with `seed`
    n_batches:int|None=None # at most this many batches
    seed:int=0 # seeds the choice of batches
    progress:bool=True # show a fastprogress bar
    def __post_init__(self):
        self.frac = check_frac('frac', self.frac, lo_open=True)
        if self.n_batches is not None: self.n_batches = check_int('n_batches', self.n_batches, lo=1)

def takes_stats_options(f):
    """`f`, whose `**kwargs` are `StatsOptions`, showing them in its signature and docments (fastcore's `delegates`,
    its docments read from the dataclass)"""
    f = delegates(StatsOptions)(f)
    f.__delwrap__ = StatsOptions
    return f

def stats_pipeline(dl, before:float=NORM_ORDER)->list:
    """The `after_batch` transforms of `dl` that make the data statistics are taken on: order below `before` (default
    `NORM_ORDER`: fastai's convention puts normalization at 99, augmentations that must follow it above), not
    train-only"""
    return [t for t in dl.after_batch.fs if getattr(t, 'order', 0) < before and getattr(t, 'split_idx', None) != 0]

def stats_items(dl, # a fastai `DataLoader`
                frac:float=1.0, # fraction of its batches
                n_batches:int|None=None, # at most this many batches
                seed:int=0, # seeds the choice of batches
               )->list:
    "Indices into `dl.dataset` that `compute_stats` reads, in batches of `dl.bs`: all in order, or a random `frac`"
    n, bs = len(dl.dataset), dl.bs or 1
    idxs = list(range(n))
    if frac < 1: random.Random(seed).shuffle(idxs)
    chunks = [idxs[i:i+bs] for i in range(0, n, bs)]
    k = max(1, math.ceil(frac * len(chunks)))
    if n_batches is not None: k = min(k, n_batches)
    return [i for c in chunks[:k] for i in c]

def _rank_world():
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized(): return dist.get_rank(), dist.get_world_size()
    return 0, 1

def dist_shard(idxs, # items in batch order
               bs:int, # batch size
              )->list:
    """This rank's share of `idxs` under `torch.distributed`: every world-size-th whole batch of `bs`, starting at its
    rank, so each batch is made exactly as in one process; all of `idxs` when no process group is initialized"""
    idxs = list(idxs)
    rank, world = _rank_world()
    if world == 1: return idxs
    chunks = [idxs[i:i+bs] for i in range(0, len(idxs), bs)]
    return [i for c in chunks[rank::world] for i in c]

@contextmanager
def _patched(obj, **attrs):
    "Set instance attributes of `obj` for the duration of a `with` block, then restore them"
    old = {k: obj.__dict__[k] for k in attrs if k in obj.__dict__}
    try:
        for k, v in attrs.items(): setattr(obj, k, v)
        yield obj
    finally:
        for k in attrs:
            if k in old: setattr(obj, k, old[k])
            else: delattr(obj, k)

def _cached_stats(dl, rec, chosen, pos)->bool:
    """Merge into `rec` the statistics the streaming pass would give over items `chosen[pos]` of a `CachedSpecDL`, from
    its cache's per-item moments (no spectrogram read); False, with `rec` untouched, where they do not apply (a
    transform before normalization, a cache without per-item moments or lacking an item, kept batch or time dims,
    NaN/Inf in an item). The decision depends on all of `chosen`, so every rank of a process group takes one path."""
    if not isinstance(dl, CachedSpecDL) or stats_pipeline(dl) or not chosen: return False
    mom = dl.item_moments(chosen)
    if mom is None: return False
    nd = mom['mean'].ndim + 1  # `[items,C,F]` moments over time of `[B,C,F,T]` batches
    if any(not -nd <= d < nd for d in rec.red_dims): return False
    dims = sorted({d % nd for d in rec.red_dims})
    if dims[0] != 0 or dims[-1] != nd - 1: return False
    if not all(mom[k].isfinite().all() for k in ('mean', 'm2')): return False  # the streaming pass names the bad batch
    if not pos: return True  # this rank has no batch: `all_reduce` brings the others' statistics
    mine = {k: v[pos][..., None] for k, v in mom.items()}  # `[items,C,F,1]`
    bs = dl.bs or 1
    items = StatsRecorder.from_moments(mine['count'], mine['mean'], mine['m2'], (nd - 1,), rec.unbiased, rec.time_dim,
                                       dl.cache.cfg, n_batches=math.ceil(len(pos) / bs))
    rec.merge(items.pool(dims[:-1]))  # Chan's merge of all items (and channels/bins when reduced) at once, in float64
    return True

def _progress(it, total, progress:bool):
    "`it`, with a fastprogress bar when `progress`"
    if not progress: return it
    from fastprogress.fastprogress import progress_bar
    return progress_bar(it, total=total, leave=False)

def _stream(batches, rec, total, progress):
    for b in _progress(batches, total, progress): rec.update(b[0] if isinstance(b, (tuple, list)) else b)

def _is_fastai_dl(dl)->bool: return hasattr(dl, 'after_batch') and hasattr(dl, 'get_idxs') and hasattr(dl, 'dataset')

def _dl_stats(dl, rec, o:StatsOptions, cache_stats:bool):
    """Stream the chosen batches of this rank through the fastai `DataLoader` itself (keeping its caches and workers),
    in order, with its `after_batch` cut before normalization and augmentation and restored afterwards, even on an
    error; or merge the cache's per-item moments of the same items"""
    bs = dl.bs or 1
    chosen = stats_items(dl, o.frac, o.n_batches, o.seed)
    pos = dist_shard(range(len(chosen)), bs)
    if cache_stats and _cached_stats(dl, rec, chosen, pos): return
    mine = [chosen[p] for p in pos]
    # `partial`, not a lambda: workers started by spawn (macOS, Windows, torch.multiprocessing) pickle `dl`
    cut = dict(after_batch=Pipeline(stats_pipeline(dl)), get_idxs=partial(list, mine), n=len(mine))
    with _patched(dl, shuffle=False, drop_last=False, **cut):
        _stream(dl, rec, math.ceil(len(mine) / bs), o.progress)

def _iter_stats(batches, rec, o:StatsOptions):
    "Stream a random `frac` of a plain iterable's batches, as they come, at most `n_batches`"
    frac, n_batches, rng, total = o.frac, o.n_batches, random.Random(o.seed), None
    try: total = len(batches)
    except TypeError: pass
    def _chosen():
        k = 0
        for b in batches:
            if n_batches is not None and k >= n_batches: return
            if frac < 1 and rng.random() >= frac: continue
            k += 1
            yield b
    if total is not None: total = min(total if frac == 1 else math.ceil(frac*total), n_batches or total)
    _stream(_chosen(), rec, total, o.progress)

@takes_stats_options
def compute_stats(dl, # a fastai `DataLoader` (or `DataLoaders`: its training set), or any iterable of batches
                  scope:str='global', # 'global' (one value) or 'freq' (one per frequency bin): `STATS_SCOPES`
                  red_dims=None, # or: the dims to reduce, overriding `scope`
                  unbiased:bool=False, # Bessel-corrected std
                  cache_stats:bool=True, # a `CachedSpecDL` with nothing before normalization: merge per-item moments
                  **kwargs)->StatsRecorder:
    """One pass over `dl`'s batches after the spectrogram transform, before normalization or augmentation: a
    `StatsRecorder`. Over a feature cache with nothing to apply before normalization, reducing over the batch and time
    dims, the same items' moments stored in the cache are merged instead (no batch is read; exact in float64, where the
    pass sums float32 batches). Under `torch.distributed` (`distrib_ctx`, `torchrun`, `accelerate launch`) each rank
    reads its shard of whole batches of a fastai `DataLoader` and the ranks all-reduce, so all hold the statistics of
    the whole set (a plain iterable is taken to be the rank's shard already, as with a `DistributedSampler`): what one
    model trained with DDP needs, every rank taking part. Without a process group it reads all of `dl`. The keyword
    arguments are `StatsOptions`' (which batches, and the progress bar)."""
    o = StatsOptions(**kwargs)
    if red_dims is None: red_dims = STATS_SCOPES[check_choice('scope', scope, tuple(STATS_SCOPES))]
    if hasattr(dl, 'loaders') and hasattr(dl, 'train'): dl = dl.train
    rec = StatsRecorder(red_dims, unbiased=unbiased)
    if _is_fastai_dl(dl): _dl_stats(dl, rec, o, cache_stats)
    else: _iter_stats(dl, rec, o)
    if _rank_world()[1] > 1: rec.all_reduce()
    if rec.kept_shape is None: raise ValueError("compute_stats got no batches from `dl`")
    dev = getattr(dl, 'device', None)
    return rec if dev is None else rec.to(dev)
