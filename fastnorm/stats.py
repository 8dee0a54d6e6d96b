"Exact streaming statistics of spectrogram batches: `StatsRecorder`, an accumulator (DataLoaders: `fastnorm.dlstats`)."
from __future__ import annotations
import math
from pathlib import Path
import torch
from .utils import atomic_path
from .checks import check_dims

__all__ = ['StatsRecorder', 'STATS_SCOPES', 'STATS_FORMAT']

# the `red_dims` of each `scope` of `compute_stats` for `[B,C,F,T]`: one value, or one per frequency bin (and channel)
STATS_SCOPES = {'global': (0,1,2,3), 'freq': (0,3)}
STATS_FORMAT = 'fastnorm.stats'  # the `format` entry of a `StatsRecorder.state_dict`

def _plain(x): return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x
def _cpu(d:dict)->dict: return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in d.items()}

def _merge_moments(na, ma, m2a, nb, mb, m2b):
    "Chan et al.'s pairwise merge of (count, mean, sum of squared deviations), float64, empty sides allowed"
    n = na + nb
    safe = torch.where(n > 0, n, torch.ones_like(n))
    delta = mb - ma
    mean = torch.where(n > 0, ma + delta * (nb / safe), ma)
    m2 = m2a + m2b + delta * delta * (na * nb / safe)
    return n, mean, m2

_STATE_KEYS = ('red_dims', 'ndim', 'kept_shape', 'unbiased', 'time_dim', 'n_batches', 'cfg', 'count', 'mean', 'm2')

def _is_int(v)->bool: return isinstance(v, int) and not isinstance(v, bool)

def _check_state(d)->tuple:
    """(cfg, problem): the `SpecConfig` of a `state_dict` and what is wrong with it (None when nothing): every entry
    there, of its type, the moments finite and of the kept shape"""
    if not isinstance(d, dict) or d.get('format') != STATS_FORMAT:
        return None, f"expected a dict with format {STATS_FORMAT!r}"
    missing = [k for k in _STATE_KEYS if k not in d]
    if missing: return None, f"it lacks {missing}"
    rd, nd, ks, mom = d['red_dims'], d['ndim'], d['kept_shape'], [d[k] for k in ('count', 'mean', 'm2')]
    if not (isinstance(rd, (list, tuple)) and rd and all(map(_is_int, rd))): return None, f"red_dims {rd!r}"
    if not (isinstance(d['unbiased'], bool) and _is_int(d['time_dim']) and _is_int(d['n_batches'])
            and d['n_batches'] >= 0):
        return None, f"unbiased, time_dim, n_batches {d['unbiased']!r}, {d['time_dim']!r}, {d['n_batches']!r}"
    if nd is None:
        if ks is not None or any(v is not None for v in mom): return None, "moments without a rank (ndim None)"
    else:
        if not (_is_int(nd) and nd >= 1 and isinstance(ks, (list, tuple)) and len(ks) == nd
                and all(_is_int(v) and v >= 1 for v in ks)):
            return None, f"ndim {nd!r} and kept_shape {ks!r}"
        if sorted(set(rd)) != list(rd) or rd[0] < 0 or rd[-1] >= nd or any(ks[i] != 1 for i in rd):
            return None, f"red_dims {rd!r} for kept_shape {ks!r}"
        for k, v in zip(('count', 'mean', 'm2'), mom):
            if not (isinstance(v, torch.Tensor) and v.is_floating_point() and list(v.shape) == list(ks)):
                what = f"{v.dtype} {list(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
                return None, f"{k} must be a float tensor of the kept shape {list(ks)} ({what} given)"
            if not torch.isfinite(v).all() or (k != 'mean' and (v < 0).any()):
                return None, f"{k} holds NaN, Inf{'' if k == 'mean' else ' or negative'} values"
    cfg = d['cfg']
    if cfg is not None:
        from .spec import SpecConfig
        try: cfg = SpecConfig(**cfg)
        except (TypeError, ValueError) as e: return None, f"cfg {d['cfg']!r}: {e}"
    return cfg, None

class StatsRecorder:
    "Exact streaming mean and std of batches, reduced over `red_dims` and kept (with `keepdim`) over the other dims"
    def __init__(self, red_dims=(0,2,3), # dims to reduce, the others kept: (0,3) of `[B,C,F,T]` gives one per mel bin
                 unbiased:bool=False, # `std` with Bessel's correction (n-1); the default is the population std
                 time_dim:int=-1, # the axis that `lengths` in `update` counts along
                ):
        self._given, self.unbiased, self.time_dim = check_dims('red_dims', red_dims), unbiased, time_dim
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
        self._check_nonempty()
        return self._mean.clone()
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
    def red_dims(self)->tuple:
        "The reduced dims: as given until the first batch sets the rank, then non-negative and sorted"
        return self._given if self.ndim is None else self._dims
    @property
    def device(self): return None if self._mean is None else self._mean.device
    @classmethod
    def from_moments(cls, count:torch.Tensor, # elements reduced into each kept value
                     mean:torch.Tensor, # their mean, shaped like `count`
                     m2:torch.Tensor, # their sum of squared deviations from `mean`, shaped like `count`
                     red_dims, # dims they were reduced over (size 1 in `mean`), e.g. (3,): per-item moments over time
                     unbiased:bool=False, time_dim:int=-1, cfg=None, # as in `StatsRecorder`; `cfg`: spectrogram's
                     n_batches:int=0, # batches they came from
                    )->StatsRecorder:
        "A recorder holding given moments (stored in float64), e.g. per-item moments that `merge` and `pool` combine"
        count, mean, m2 = (torch.as_tensor(v, dtype=torch.float64) for v in (count, mean, m2))
        if not count.shape == mean.shape == m2.shape:
            shapes = ', '.join(str(list(v.shape)) for v in (count, mean, m2))
            raise ValueError(f"`count`, `mean` and `m2` must have one shape ({shapes} given)")
        r = cls(red_dims, unbiased, time_dim)
        nd = mean.ndim
        dims = tuple(sorted(d % nd for d in r.red_dims if -nd <= d < nd))
        if len(dims) != len(r.red_dims) or len(set(dims)) != len(dims) or any(mean.shape[d] != 1 for d in dims):
            raise ValueError(f"Moments of shape {list(mean.shape)} must have size 1 in every one of "
                             f"`red_dims`={r.red_dims}")
        r.ndim, r._dims, r.shape, r.cfg, r.n_batches = nd, dims, tuple(mean.shape), cfg, n_batches
        r._n, r._mean, r._m2 = count, mean, m2
        return r
    def _check_nonempty(self):
        if self._mean is None: raise ValueError("This StatsRecorder has seen no data: call `update(batch)` first")
    def __repr__(self):
        if self._mean is None: return f"StatsRecorder(red_dims={self.red_dims}, empty)"
        n = self.n if isinstance(self.n, int) else 'per-entry'
        return (f"StatsRecorder(red_dims={self.red_dims}, kept_shape={self.kept_shape}, n_batches={self.n_batches}, "
                f"n={n})")

    # ---- updating ----
    def _init_shape(self, x):
        nd = x.ndim
        dims = tuple(sorted(d % nd if -nd <= d < nd else d for d in self.red_dims))
        if any(not 0 <= d < nd for d in dims) or len(set(dims)) != len(dims):
            raise ValueError(f"A batch of rank {nd} (shape {list(x.shape)}) cannot be reduced over "
                             f"`red_dims`={self.red_dims}")
        self.ndim, self._dims = nd, dims
        self.shape = tuple(1 if d in dims else s for d, s in enumerate(x.shape))

    def _check(self, x):
        if self.ndim is None:
            self._init_shape(x)
            return
        if x.ndim != self.ndim:
            raise ValueError(f"Batch {self.n_batches} has rank {x.ndim} (shape {list(x.shape)}) but this recorder "
                             f"holds statistics of rank-{self.ndim} batches (kept shape {list(self.shape)}), "
                             "e.g. [B,C,F,T]")
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
            raise ValueError(f"Batch {self.n_batches} was made with other spectrogram settings than these statistics: "
                             f"{diff} (stats, batch)")

    def _mask(self, x, mask, lengths):
        if mask is not None and lengths is not None: raise ValueError("Give `mask` or `lengths`, not both")
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=x.device)
            if lengths.shape != (x.shape[0],):
                raise ValueError(f"`lengths` must hold one length per item, shape [{x.shape[0]}] "
                                 f"({list(lengths.shape)} given)")
            td = self.time_dim % x.ndim
            if td == 0: raise ValueError("`time_dim` must not be the batch dim 0")
            shape = [1]*x.ndim
            shape[0], shape[td] = x.shape[0], x.shape[td]
            return (torch.arange(x.shape[td], device=x.device)[None] < lengths[:, None]).reshape(shape)
        if mask is None: return None
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dtype != torch.bool:
            raise ValueError(f"`mask` must be a bool tensor, True where values count ({mask.dtype} given)")
        try: torch.broadcast_shapes(mask.shape, x.shape)
        except RuntimeError:
            raise ValueError(f"`mask` of shape {list(mask.shape)} does not broadcast to the batch shape "
                             f"{list(x.shape)}") from None
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
        """Per-batch count, mean and M2 (float64): sums shifted by the mean of up to 8 of its items, so they depend on
        this batch only"""
        dims = self._dims
        sub = slice(None, None, max(1, x.shape[0] // 8))
        if x.dtype not in (torch.float32, torch.float64): x = x.float()
        d = self._work(x)
        if mask is None:
            size = float(math.prod(x.shape[i] for i in dims))
            n = torch.full(self.shape, size, dtype=torch.float64, device=x.device)
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
               mask:torch.Tensor|None=None, # bool, broadcastable to `batch`: True where values count (not padding)
               lengths=None, # or: valid length of each item along `time_dim`, shape `[B]`
              ):
        "Add a batch; padding given by `mask` or `lengths` never counts"
        if not isinstance(batch, torch.Tensor):
            raise ValueError(f"`batch` must be a tensor ({type(batch).__name__} given)")
        if not batch.is_floating_point():
            raise ValueError(f"`batch` must be a floating point tensor ({batch.dtype} given)")
        try: return self._update(batch, mask, lengths)
        except ValueError:
            # a rejected first batch leaves the recorder as new
            if self._mean is None: self.ndim = self.shape = self.cfg = None
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
            if items:
                more = '...' if len(items) > 10 else ''
                raise ValueError(f"Batch {self.n_batches} holds NaN or Inf values (items {items[:10]}{more})")
            raise ValueError(f"Batch {self.n_batches} overflows float32 when squared: "
                             "cast it to float64 before `update`")
        self._add(n, mean, m2)
        self.n_batches += 1
        return self

    def _add(self, n, mean, m2):
        if self._mean is None: self._n, self._mean, self._m2 = n, mean, m2
        else:
            dev = self._mean.device
            if n.device != dev: n, mean, m2 = n.to(dev), mean.to(dev), m2.to(dev)
            self._n, self._mean, self._m2 = _merge_moments(self._n, self._mean, self._m2, n, mean, m2)

    def merge(self, other:StatsRecorder):
        "Fold in the statistics of `other` (the same `red_dims` and kept shape), as if its batches had been added here"
        if not isinstance(other, StatsRecorder):
            raise ValueError(f"`other` must be a StatsRecorder ({type(other).__name__} given)")
        if other._mean is None: return self
        if self._mean is not None:
            if other.kept_shape != self.kept_shape or other._dims != self._dims:
                raise ValueError(f"Cannot merge statistics with kept shape {list(other.kept_shape)} "
                                 f"(red_dims {other.red_dims}) into kept shape {list(self.kept_shape)} "
                                 f"(red_dims {self.red_dims})")
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
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("`all_reduce` needs an initialized torch.distributed process group")
        allst = [None] * dist.get_world_size(group)
        dist.all_gather_object(allst, None if self._mean is None else _cpu(self.state_dict()), group=group)
        res = StatsRecorder(self.red_dims, self.unbiased, self.time_dim)
        for s in allst:  # in rank order, so every rank computes bit-identical results
            if s is not None: res.merge(StatsRecorder.from_state_dict(s))
        if res._mean is None: return self
        dev = self.device
        self.load_state_dict(res.state_dict())
        return self if dev is None else self.to(dev)

    def pool(self, red_dims)->StatsRecorder:
        "Exact statistics reduced over more `red_dims` (e.g. global from per-channel), as a new recorder"
        self._check_nonempty()
        nd = self.ndim
        dims = tuple(sorted({d % nd for d in check_dims('red_dims', red_dims, nd, distinct=False)}))
        n = self._n.sum(dims, keepdim=True)
        safe = n.clamp_min(1)
        mean = (self._n * self._mean).sum(dims, keepdim=True) / safe
        m2 = self._m2.sum(dims, keepdim=True) + (self._n * (self._mean - mean)**2).sum(dims, keepdim=True)
        alld = tuple(sorted(set(self._dims) | set(dims)))
        return StatsRecorder.from_moments(n, mean, m2, alld, self.unbiased, self.time_dim, self.cfg, self.n_batches)

    def to(self, device):
        "Move the statistics to `device`"
        if self._mean is not None:
            self._n, self._mean, self._m2 = self._n.to(device), self._mean.to(device), self._m2.to(device)
        return self

    # ---- state: one pair of methods, used by `save`/`load`, pickling and `all_reduce` ----
    def state_dict(self)->dict:
        "Settings, spectrogram settings (`cfg`), counts and moments (tensors on their device), fastnorm version"
        from . import __version__
        return dict(format=STATS_FORMAT, version=__version__,
                    red_dims=list(self.red_dims), ndim=self.ndim,
                    kept_shape=None if self.shape is None else list(self.shape), unbiased=self.unbiased,
                    time_dim=self.time_dim,
                    n_batches=self.n_batches, cfg=None if self.cfg is None else self.cfg.to_dict(),
                    count=self._n, mean=self._mean, m2=self._m2)

    def load_state_dict(self, d:dict)->StatsRecorder:
        "Take over the state `state_dict` gave (also of an empty recorder); returns `self`"
        cfg, problem = _check_state(d)
        if problem: raise ValueError(f"Not a StatsRecorder state: {problem}")
        self._given, self.unbiased, self.time_dim = tuple(d['red_dims']), d['unbiased'], d['time_dim']
        self.n_batches = d['n_batches']
        self.ndim, self.cfg = d['ndim'], cfg
        self.shape = None if d['kept_shape'] is None else tuple(d['kept_shape'])
        self._dims = None if self.ndim is None else tuple(d['red_dims'])
        self._n, self._mean, self._m2 = d['count'], d['mean'], d['m2']
        self.__dict__.pop('_buf', None)
        return self

    @classmethod
    def from_state_dict(cls, d:dict)->StatsRecorder:
        "A recorder with the state `state_dict` gave"
        return cls.__new__(cls).load_state_dict(d)

    def __getstate__(self): return self.state_dict()  # pickles (learn.export) carry the statistics, not the buffer
    def __setstate__(self, d): self.load_state_dict(d)

    def save(self, path)->Path:
        "Save statistics and metadata (red_dims, kept shape, count, spectrogram settings, fastnorm version) atomically"
        self._check_nonempty()
        path = Path(path)
        with atomic_path(path) as tmp: torch.save(_cpu(self.state_dict()), tmp)
        return path

    @classmethod
    def load(cls, path, map_location='cpu')->StatsRecorder:
        "Statistics saved with `save`"
        path = Path(path)
        if not path.is_file(): raise FileNotFoundError(f"Statistics file not found: {path}")
        try: d = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # whatever torch's reader says of bytes it cannot read (zip, pickle, EOF)
            raise ValueError(f"{path} does not hold fastnorm statistics: not a file StatsRecorder.save wrote, or cut "
                             f"short ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        _, problem = _check_state(d)
        if problem: raise ValueError(f"{path} does not hold fastnorm statistics: {problem}")
        return cls.from_state_dict(d)

    # ---- display ----
    def _axis_name(self):
        """What the last kept dim of `mean` is: frequency bins of a `[B,C,F,T]` batch reduced over time, else the dim's
        index"""
        kept = [d for d in range(self.ndim) if d not in self._dims and self.shape[d] > 1]
        if self.ndim == 4 and kept and kept[-1] == 2:
            return 'mel bin' if self.cfg is None or self.cfg.n_mels else 'frequency bin'
        if self.ndim == 4 and kept and kept[-1] == 1: return 'channel'
        return f'dim {kept[-1]}' if kept else ''

    def plot(self, figsize=(8,3), title:str|None=None):
        "Per-channel mean and std against mel bin (or the single global values), as a matplotlib `Figure`"
        import matplotlib.pyplot as plt
        mean, std = self.mean.cpu().squeeze(), self.std.cpu().squeeze()
        fig, axs = plt.subplots(1, 2, figsize=figsize)
        if mean.ndim == 0:
            for ax, v, nm in zip(axs, (mean, std), ('mean', 'std')):
                ax.bar([0], [float(v)])
                ax.set_xticks([])
                ax.set_title(f"global {nm}: {float(v):.4g}")
        else:
            m2, s2 = mean.reshape(-1, mean.shape[-1]), std.reshape(-1, std.shape[-1])
            for ax, v, nm in zip(axs, (m2, s2), ('mean', 'std')):
                for i, row in enumerate(v): ax.plot(row.numpy(), label=f"ch {i}" if len(v) > 1 else None)
                ax.set_xlabel(self._axis_name())
                ax.set_title(nm)
                if len(v) > 1: ax.legend()
            if self.cfg is not None: axs[0].set_ylabel('dB' if self.cfg.db else 'power')
        if title: fig.suptitle(title)
        fig.tight_layout()
        return fig
