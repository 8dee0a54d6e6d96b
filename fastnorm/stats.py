"Exact streaming statistics of spectrogram batches: `StatsRecorder` and `compute_stats` over a fastai `DataLoader`."
from __future__ import annotations
import math, random
from contextlib import contextmanager
from pathlib import Path
import torch
from .utils import atomic_path

__all__ = ['StatsRecorder', 'compute_stats', 'STATS_KINDS', 'stats_pipeline']

STATS_KINDS = {'global': (0,1,2,3), 'channel': (0,3)}  # for `[B,C,F,T]`: one value, or one per (channel, frequency bin)

def _plain(x): return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x

def _chan(na, ma, m2a, nb, mb, m2b):
    "Chan et al.'s pairwise merge of (count, mean, sum of squared deviations), float64, empty sides allowed"
    n = na + nb
    safe = torch.where(n > 0, n, torch.ones_like(n))
    delta = mb - ma
    mean = torch.where(n > 0, ma + delta * (nb / safe), ma)
    m2 = m2a + m2b + delta * delta * (na * nb / safe)
    return n, mean, m2

class StatsRecorder:
    "Exact streaming mean and std of batches, reduced over `red_dims` and kept (with `keepdim`) over the other dims"
    def __init__(self, red_dims=(0,2,3), # dims to reduce; the others are kept, e.g. (0,3) of `[B,C,F,T]`: one value per mel bin
                 unbiased:bool=False, # `std` with Bessel's correction (n-1); the default is the population std
                 time_dim:int=-1, # the axis that `lengths` in `update` counts along
                ):
        red_dims = (red_dims,) if isinstance(red_dims, int) else tuple(red_dims)
        if not red_dims or len(set(red_dims)) != len(red_dims) or not all(isinstance(d, int) for d in red_dims):
            raise ValueError(f"`red_dims` must be distinct integer dims, at least one ({red_dims!r} given)")
        self.red_dims, self.unbiased, self.time_dim = red_dims, unbiased, time_dim
        self.ndim = self.shape = self.cfg = None
        self._n = self._mean = self._m2 = None
        self.n_batches = 0

    # ---- state ----
    @property
    def kept_shape(self)->tuple|None:
        "Shape of `mean`/`std`: the batch shape with 1 in every reduced dim"
        return None if self._mean is None else tuple(self._mean.shape)
    @property
    def count(self)->torch.Tensor|None:
        "Elements reduced into each kept value (float64, shaped like `mean`)"
        return self._n
    @property
    def n(self):
        "Elements reduced into each kept value: an `int` when all are equal (no masks), else the `count` tensor"
        if self._n is None: return 0
        lo, hi = self._n.min(), self._n.max()
        return int(hi) if lo == hi else self._n
    @property
    def mean(self)->torch.Tensor:
        "Mean, float64, shaped for broadcasting against the batches (`keepdim`), on their device"
        self._check_nonempty(); return self._mean.clone()
    @property
    def var(self)->torch.Tensor:
        "Variance (population unless `unbiased`), float64, shaped like `mean`"
        self._check_nonempty()
        d = self._n - 1 if self.unbiased else self._n
        return self._m2.clamp_min(0) / d.clamp_min(1)
    @property
    def std(self)->torch.Tensor:
        "Standard deviation (population unless `unbiased`), float64, shaped like `mean`"
        return self.var.sqrt()
    @property
    def device(self): return None if self._mean is None else self._mean.device
    @classmethod
    def _of(cls, n, mean, m2, dims, unbiased=False, time_dim=-1, cfg=None, n_batches=0)->StatsRecorder:
        "A recorder holding `n`, `mean` and `m2` (float64, the kept shape) of data reduced over `dims` (non-negative, sorted)"
        r = cls(dims, unbiased, time_dim)
        r.ndim, r._dims, r.shape, r.cfg, r.n_batches = len(mean.shape), tuple(dims), tuple(mean.shape), cfg, n_batches
        r._n, r._mean, r._m2 = n, mean, m2
        return r
    def _check_nonempty(self):
        if self._mean is None: raise ValueError("This StatsRecorder has seen no data: call `update(batch)` first")
    def __repr__(self):
        if self._mean is None: return f"StatsRecorder(red_dims={self.red_dims}, empty)"
        return f"StatsRecorder(red_dims={self.red_dims}, kept_shape={self.kept_shape}, n_batches={self.n_batches}, n={self.n if isinstance(self.n, int) else 'per-entry'})"

    # ---- updating ----
    def _init_shape(self, x):
        nd = x.ndim
        dims = tuple(sorted(d % nd if -nd <= d < nd else d for d in self.red_dims))
        if any(not 0 <= d < nd for d in dims) or len(set(dims)) != len(dims):
            raise ValueError(f"A batch of rank {nd} (shape {list(x.shape)}) cannot be reduced over `red_dims`={self.red_dims}")
        self.ndim, self._dims = nd, dims
        self.shape = tuple(1 if d in dims else s for d, s in enumerate(x.shape))

    def _check(self, x):
        if self.ndim is None: self._init_shape(x); return
        if x.ndim != self.ndim:
            raise ValueError(f"Batch {self.n_batches} has rank {x.ndim} (shape {list(x.shape)}) but this recorder holds statistics "
                             f"of rank-{self.ndim} batches (kept shape {list(self.shape)}), e.g. [B,C,F,T]")
        for d, (s, k) in enumerate(zip(x.shape, self.shape)):
            if d not in self._dims and s != k:
                raise ValueError(f"Batch {self.n_batches} has shape {list(x.shape)}: kept dim {d} has size {s}, "
                                 f"but the statistics have {k} there (kept shape {list(self.shape)})")

    def _check_cfg(self, x):
        cfg = getattr(x, 'cfg', None)
        if cfg is None: return
        if self.cfg is None and self._mean is None: self.cfg = cfg
        elif self.cfg is not None and cfg != self.cfg:
            diff = {k: (v, getattr(cfg, k)) for k, v in self.cfg.to_dict().items() if getattr(cfg, k) != v}
            raise ValueError(f"Batch {self.n_batches} was made with other spectrogram settings than these statistics: {diff} (stats, batch)")

    def _mask(self, x, mask, lengths):
        if mask is not None and lengths is not None: raise ValueError("Give `mask` or `lengths`, not both")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (x.shape[0],):
                raise ValueError(f"`lengths` must hold one length per item, shape [{x.shape[0]}] ({list(lengths.shape)} given)")
            td = self.time_dim % x.ndim
            if td == 0: raise ValueError("`time_dim` must not be the batch dim 0")
            shape = [1]*x.ndim; shape[0], shape[td] = x.shape[0], x.shape[td]
            return (torch.arange(x.shape[td], device=x.device)[None] < lengths[:, None]).reshape(shape)
        if mask is None: return None
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dtype != torch.bool: raise ValueError(f"`mask` must be a bool tensor, True where values count ({mask.dtype} given)")
        try: torch.broadcast_shapes(mask.shape, x.shape)
        except RuntimeError: raise ValueError(f"`mask` of shape {list(mask.shape)} does not broadcast to the batch shape {list(x.shape)}") from None
        if mask.ndim != x.ndim: mask = mask.reshape((1,)*(x.ndim - mask.ndim) + tuple(mask.shape))
        return mask

    @property
    def _split(self):
        "First dim of the trailing block of reduced dims (contiguous in memory)"
        i = self.ndim
        while i - 1 in self._dims: i -= 1
        return i

    def _work(self, x):
        "A work buffer shaped like `x`, kept between batches (a fresh 10 MB tensor per batch costs page faults)"
        buf = getattr(self, '_buf', None)
        if buf is None or buf.device != x.device or buf.dtype != x.dtype or buf.numel() < x.numel():
            buf = self._buf = torch.empty(x.numel(), dtype=x.dtype, device=x.device)
        return buf[:x.numel()].view(x.shape)

    def _sum(self, d):
        "Sum over the reduced dims: the trailing contiguous ones in `d`'s dtype (pairwise), the others in float64"
        inner = tuple(range(self._split, d.ndim))
        if inner and math.prod(d.shape[i] for i in inner) >= 32: d = d.sum(inner, keepdim=True)
        outer = tuple(i for i in self._dims if d.shape[i] > 1)
        d = d.double()
        return d.sum(outer, keepdim=True) if outer else d

    def _batch_stats(self, x, mask):
        "Per-batch count, mean and M2 (float64): sums shifted by the mean of up to 8 of its items, so they depend on this batch only"
        dims = self._dims
        sub = slice(None, None, max(1, x.shape[0] // 8))
        if x.dtype not in (torch.float32, torch.float64): x = x.float()
        d = self._work(x)
        if mask is None:
            n = torch.full(self.shape, float(math.prod(x.shape[i] for i in dims)), dtype=torch.float64, device=x.device)
            k = x[sub].mean(dims, keepdim=True)
            torch.sub(x, k, out=d)
        else:
            m = mask.expand(x.shape)
            n = m.sum(dims, keepdim=True, dtype=torch.float64)
            m1 = m[sub]
            n1 = m1.sum(dims, keepdim=True)
            k = torch.where(m1, x[sub], 0).sum(dims, keepdim=True) / n1.clamp_min(1)
            k = torch.where(n1 > 0, k, 0)
            torch.sub(x, k, out=d).masked_fill_(~m, 0)
        s1 = self._sum(d)
        s2 = self._sum(d.mul_(d))
        safe = n.clamp_min(1)
        mean = torch.where(n > 0, k.double() + s1 / safe, 0.)
        m2 = (s2 - s1 * s1 / safe).clamp_min(0)
        return n, mean, m2, s2

    @torch.no_grad()
    def update(self, batch:torch.Tensor, # `[B,C,F,T]` (any rank matching `red_dims`), float, any device
               mask:torch.Tensor|None=None, # bool, broadcastable to `batch`: True where values count (padding is False)
               lengths=None, # or: valid length of each item along `time_dim`, shape `[B]`
              ):
        "Add a batch; padding given by `mask` or `lengths` never counts"
        if not isinstance(batch, torch.Tensor): raise ValueError(f"`batch` must be a tensor ({type(batch).__name__} given)")
        if not (batch.is_floating_point()): raise ValueError(f"`batch` must be a floating point tensor ({batch.dtype} given)")
        try: return self._update(batch, mask, lengths)
        except ValueError:
            if self._mean is None: self.ndim = self.shape = self.cfg = None  # a rejected first batch leaves the recorder as new
            raise

    def _update(self, batch, mask, lengths):
        self._check(batch)
        self._check_cfg(batch)
        x = _plain(batch)
        n, mean, m2, s2 = self._batch_stats(x, self._mask(x, mask, lengths))
        if not (torch.isfinite(m2).all() and torch.isfinite(s2).all() and torch.isfinite(mean).all()):
            m = self._mask(x, mask, lengths)
            bad = ~torch.isfinite(x) if m is None else (~torch.isfinite(x) & m)
            items = bad.flatten(1).any(1).nonzero().flatten().tolist()
            if items: raise ValueError(f"Batch {self.n_batches} holds NaN or Inf values (items {items[:10]}{'...' if len(items) > 10 else ''})")
            raise ValueError(f"Batch {self.n_batches} overflows float32 when squared: cast it to float64 before `update`")
        self._add(n, mean, m2)
        self.n_batches += 1
        return self

    def _add(self, n, mean, m2):
        if self._mean is None: self._n, self._mean, self._m2 = n, mean, m2
        else:
            if n.device != self._mean.device: n, mean, m2 = n.to(self._mean.device), mean.to(self._mean.device), m2.to(self._mean.device)
            self._n, self._mean, self._m2 = _chan(self._n, self._mean, self._m2, n, mean, m2)

    def merge(self, other:StatsRecorder):
        "Fold in the statistics of `other` (the same `red_dims` and kept shape), as if its batches had been added here"
        if not isinstance(other, StatsRecorder): raise ValueError(f"`other` must be a StatsRecorder ({type(other).__name__} given)")
        if other._mean is None: return self
        if self._mean is not None:
            if other.kept_shape != self.kept_shape or other._dims != self._dims:
                raise ValueError(f"Cannot merge statistics with kept shape {list(other.kept_shape)} (red_dims {other.red_dims}) "
                                 f"into kept shape {list(self.kept_shape)} (red_dims {self.red_dims})")
            if other.cfg is not None and self.cfg is not None and other.cfg != self.cfg:
                raise ValueError("Cannot merge statistics of spectrograms made with different settings (`cfg`)")
        else: self.ndim, self._dims, self.shape = other.ndim, other._dims, other.shape
        if self.cfg is None: self.cfg = other.cfg
        self._add(other._n, other._mean, other._m2)
        self.n_batches += other.n_batches
        return self

    def all_reduce(self, group=None):
        "Merge the statistics of every rank of `torch.distributed` (gloo or nccl) so all hold those of the whole set"
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()): raise ValueError("`all_reduce` needs an initialized torch.distributed process group")
        mine = None if self._mean is None else dict(n=self._n.cpu(), mean=self._mean.cpu(), m2=self._m2.cpu(), ndim=self.ndim, dims=self._dims,
                                                     shape=self.shape, cfg=self.cfg, n_batches=self.n_batches)
        allst = [None] * dist.get_world_size(group)
        dist.all_gather_object(allst, mine, group=group)
        dev = self.device
        res = StatsRecorder(self.red_dims, self.unbiased, self.time_dim)
        for s in allst:  # in rank order, so every rank computes bit-identical results
            if s is None: continue
            res.merge(StatsRecorder._of(s['n'], s['mean'], s['m2'], s['dims'], self.unbiased, self.time_dim, s['cfg'], s['n_batches']))
        if res._mean is None: return self
        if dev is not None: res._n, res._mean, res._m2 = res._n.to(dev), res._mean.to(dev), res._m2.to(dev)
        self.__dict__.update({k: v for k, v in res.__dict__.items() if k not in ('red_dims', 'unbiased', 'time_dim')})
        return self

    def pool(self, dims)->StatsRecorder:
        "Exact statistics reduced over more `dims` (e.g. global from per-channel), as a new recorder"
        self._check_nonempty()
        dims = (dims,) if isinstance(dims, int) else tuple(d % self.ndim for d in dims)
        alld = tuple(sorted(set(self._dims) | set(dims)))
        n = self._n.sum(dims, keepdim=True)
        safe = n.clamp_min(1)
        mean = (self._n * self._mean).sum(dims, keepdim=True) / safe
        m2 = self._m2.sum(dims, keepdim=True) + (self._n * (self._mean - mean)**2).sum(dims, keepdim=True)
        return StatsRecorder._of(n, mean, m2, alld, self.unbiased, self.time_dim, self.cfg, self.n_batches)

    def to(self, device):
        "Move the statistics to `device`"
        if self._mean is not None: self._n, self._mean, self._m2 = self._n.to(device), self._mean.to(device), self._m2.to(device)
        return self

    # ---- persistence ----
    def state_dict(self)->dict:
        self._check_nonempty()
        from . import __version__
        return dict(format='fastnorm.stats', version=__version__, red_dims=list(self._dims), ndim=self.ndim, kept_shape=list(self.shape),
                    unbiased=self.unbiased, time_dim=self.time_dim, n_batches=self.n_batches,
                    cfg=None if self.cfg is None else self.cfg.to_dict(),
                    count=self._n.cpu(), mean=self._mean.cpu(), m2=self._m2.cpu())

    def save(self, path)->Path:
        "Save statistics and metadata (red_dims, kept shape, count, spectrogram settings, fastnorm version) atomically"
        path = Path(path)
        with atomic_path(path) as tmp: torch.save(self.state_dict(), tmp)
        return path

    @classmethod
    def load(cls, path, map_location='cpu')->StatsRecorder:
        "Statistics saved with `save`"
        d = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(d, dict) or d.get('format') != 'fastnorm.stats': raise ValueError(f"{path} does not hold fastnorm statistics")
        from .spec import SpecConfig
        r = cls(tuple(d['red_dims']), d['unbiased'], d['time_dim'])
        r.ndim, r._dims, r.shape, r.n_batches = d['ndim'], tuple(d['red_dims']), tuple(d['kept_shape']), d['n_batches']
        r.cfg = None if d['cfg'] is None else SpecConfig(**d['cfg'])
        r._n, r._mean, r._m2, r.version = d['count'], d['mean'], d['m2'], d['version']
        return r

    # ---- display ----
    def _axis_name(self):
        "What the last kept dim of `mean` is: frequency bins of a `[B,C,F,T]` batch reduced over time, else the dim's index"
        kept = [d for d in range(self.ndim) if d not in self._dims and self.shape[d] > 1]
        if self.ndim == 4 and kept and kept[-1] == 2: return 'mel bin' if self.cfg is None or self.cfg.n_mels else 'frequency bin'
        if self.ndim == 4 and kept and kept[-1] == 1: return 'channel'
        return f'dim {kept[-1]}' if kept else ''

    def plot(self, figsize=(8,3), title:str|None=None):
        "Per-channel mean and std against mel bin (or the single global values), as a matplotlib `Figure`"
        import matplotlib.pyplot as plt
        mean, std = self.mean.cpu().squeeze(), self.std.cpu().squeeze()
        fig, axs = plt.subplots(1, 2, figsize=figsize)
        if mean.ndim == 0:
            for ax, v, nm in zip(axs, (mean, std), ('mean', 'std')):
                ax.bar([0], [float(v)]); ax.set_xticks([]); ax.set_title(f"global {nm}: {float(v):.4g}")
        else:
            m2, s2 = mean.reshape(-1, mean.shape[-1]), std.reshape(-1, std.shape[-1])
            for ax, v, nm in zip(axs, (m2, s2), ('mean', 'std')):
                for i, row in enumerate(v): ax.plot(row.numpy(), label=f"ch {i}" if len(v) > 1 else None)
                ax.set_xlabel(self._axis_name()); ax.set_title(nm)
                if len(v) > 1: ax.legend()
            if self.cfg is not None: axs[0].set_ylabel('dB' if self.cfg.db else 'power')
        if title: fig.suptitle(title)
        fig.tight_layout()
        return fig

# ---- over a DataLoader ----
def stats_pipeline(dl):
    "The `after_batch` transforms of `dl` that make the data statistics are taken on: order < 99, not train-only, no normalization"
    from .norm import SpecNormalize
    from fastai.data.transforms import Normalize
    return [t for t in dl.after_batch.fs if getattr(t, 'order', 0) < 99 and getattr(t, 'split_idx', None) != 0
            and not isinstance(t, (SpecNormalize, Normalize))]

def _stats_idxs(dl, frac, n_batches, seed):
    "Item indices of a random fraction of `dl`'s batches (all items, in order, when `frac`=1)"
    n, bs = len(dl.dataset), dl.bs or 1
    idxs = list(range(n))
    if frac < 1: random.Random(seed).shuffle(idxs)
    chunks = [idxs[i:i+bs] for i in range(0, n, bs)]
    k = max(1, math.ceil(frac * len(chunks)))
    if n_batches is not None: k = min(k, n_batches)
    return [i for c in chunks[:k] for i in c]

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

def _cached_stats(dl, rec, chosen):
    """The statistics the streaming pass of `compute_stats` would give over items `chosen` of `dl`, merged from the per-item
    statistics of its feature cache without reading a spectrogram; None where they do not apply (not a `CachedSpecDL`, a
    transform before normalization, a cache without per-item statistics, kept batch or time dims, NaN/Inf in an item)."""
    from .cache import CachedSpecDL
    if not isinstance(dl, CachedSpecDL) or stats_pipeline(dl): return None
    rows, _ = dl._index()
    st, nd = dl._cache.item_stats, dl._cache.data.ndim
    if st is None or not chosen or any(not -nd <= d < nd for d in rec.red_dims): return None
    dims = sorted({d % nd for d in rec.red_dims})
    if dims[0] != 0 or dims[-1] != nd - 1: return None
    idx = torch.from_numpy(rows[chosen])
    n, mean, m2 = (st[k].index_select(0, idx)[..., None] for k in ('count', 'mean', 'm2'))  # [items,C,F,1] (index_select: `t[idx]` took 6 ms on 2 busy cores)
    if not (torch.isfinite(mean).all() and torch.isfinite(m2).all()): return None  # the streaming pass names the bad batch
    items = StatsRecorder._of(n, mean, m2, (nd - 1,), rec.unbiased, rec.time_dim, dl._cache.cfg,
                              n_batches=math.ceil(len(chosen) / (dl.bs or 1)))
    rec.merge(items.pool(dims[:-1]))  # Chan's merge of all items (and channels/bins when reduced) at once, in float64
    return rec.to(dl.device) if getattr(dl, 'device', None) is not None else rec

def compute_stats(dl, # a fastai `DataLoader` (or `DataLoaders`: its training set), or any iterable of batches
                  kind:str|None='global', # 'global' (one value) or 'channel' (one per channel and frequency bin)
                  red_dims=None, # or: the dims to reduce, overriding `kind`
                  frac:float=1.0, # fraction of the batches to use, drawn at random with `seed`
                  n_batches:int|None=None, # at most this many batches
                  seed:int=0, # seeds the choice of batches
                  progress:bool=True, # show a fastprogress bar
                  unbiased:bool=False, # Bessel-corrected std
                  cache_stats:bool=True, # over a `CachedSpecDL` with no transform before normalization: merge the cache's per-item statistics instead of reading the batches
                 )->StatsRecorder:
    """One pass over `dl`'s batches after the spectrogram transform, before normalization or augmentation: a `StatsRecorder`.
    Over a feature cache with nothing to apply before normalization, reducing over the batch and time dims, the same items'
    statistics stored in the cache are merged instead (no batch is read; exact in float64, where the pass sums float32 batches)."""
    if red_dims is None:
        if kind not in STATS_KINDS: raise ValueError(f"`kind` must be one of {sorted(STATS_KINDS)} or give `red_dims` ({kind!r} given)")
        red_dims = STATS_KINDS[kind]
    if not 0 < frac <= 1: raise ValueError(f"`frac` must be in (0, 1] ({frac} given)")
    if n_batches is not None and n_batches < 1: raise ValueError(f"`n_batches` must be a positive integer or None ({n_batches} given)")
    if hasattr(dl, 'loaders') and hasattr(dl, 'train'): dl = dl.train
    rec = StatsRecorder(red_dims, unbiased=unbiased)
    def _run(it, total):
        if progress:
            from fastprogress.fastprogress import progress_bar
            it = progress_bar(it, total=total, leave=False)
        for b in it: rec.update(b[0] if isinstance(b, (tuple, list)) else b)
    if hasattr(dl, 'after_batch') and hasattr(dl, 'get_idxs') and hasattr(dl, 'dataset'):
        # the fastai DataLoader itself (keeping its caches and workers), over the chosen items in order, with its
        # after_batch cut before normalization and augmentation; restored afterwards, even on an error
        from fasttransform import Pipeline
        chosen = _stats_idxs(dl, frac, n_batches, seed)
        if cache_stats and (fast := _cached_stats(dl, rec, chosen)) is not None: return fast
        with _patched(dl, after_batch=Pipeline(stats_pipeline(dl)), get_idxs=lambda: chosen, n=len(chosen), shuffle=False, drop_last=False):
            _run(dl, math.ceil(len(chosen) / (dl.bs or 1)))
    else:  # a plain iterable: take a random fraction of its batches as they come
        rng, total = random.Random(seed), None
        try: total = len(dl)
        except TypeError: pass
        def _gen():
            k = 0
            for b in dl:
                if n_batches is not None and k >= n_batches: return
                if frac < 1 and rng.random() >= frac: continue
                k += 1; yield b
        if total is not None: total = min(total if frac == 1 else math.ceil(frac*total), n_batches or total)
        _run(_gen(), total)
    if rec._mean is None: raise ValueError("compute_stats got no batches from `dl`")
    return rec
