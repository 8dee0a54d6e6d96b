"""Normalize transforms for spectrogram batches (global, per channel, per item) and `add_spec_norm`, the one-line hook.
Like fastai's `Normalize`, `GlobalSpecNorm()` / `FreqSpecNorm()` given no statistics compute them in `setups`, from
the training set, when the DataLoaders are built."""
from __future__ import annotations
import warnings
from typing import Callable, NamedTuple
import torch
from torch import nn
from plum import NotFoundLookupError
from fastcore.foundation import L
from fastai.data.transforms import DisplayedTransform
from .audio import AudioTensor
from .spec import TensorSpec
from .stats import StatsRecorder
from .dlstats import StatsOptions, compute_stats, takes_stats_options
from .checks import check_batch4d, check_choice, check_frac, check_int, check_positive
from .steps import plain, const

__all__ = ['SpecNormalize', 'GlobalSpecNorm', 'FreqSpecNorm', 'InstanceSpecNorm', 'ImageNetSpecNorm', 'SPEC_NORMS',
           'add_spec_norm']

def _shape_to(v, axes, ndim=4):
    "Tensor `v` reshaped to broadcast against rank-`ndim` batches: its dims fill the kept (non-`axes`) dims (right)"
    v = torch.as_tensor(v, dtype=torch.float64 if not isinstance(v, torch.Tensor) else None)
    if isinstance(v, torch.Tensor) and type(v) is not torch.Tensor: v = v.as_subclass(torch.Tensor)
    if v.ndim == ndim: return v
    kept = [d for d in range(ndim) if d not in axes]
    sq = v.squeeze() if v.ndim > len(kept) else v
    if sq.ndim > len(kept):
        raise ValueError(f"A mean/std of shape {list(v.shape)} does not fit the kept dims {kept} of "
                         f"`axes`={tuple(axes)}")
    shape = [1]*ndim
    for d, s in zip(kept[len(kept)-sq.ndim:], sq.shape): shape[d] = s
    return sq.reshape(shape)

def _is_batch(x)->bool:
    "Whether a tensor that is not a `TensorSpec` is a float batch a spectrogram normalizer must handle (targets pass)"
    if not (x.is_floating_point() and x.ndim >= 3): return False
    if isinstance(x, AudioTensor):
        raise ValueError(f"A waveform batch (AudioTensor of shape {list(x.shape)}) reached a spectrogram normalizer: "
                         "put MelSpec before it in `batch_tfms` (or use the feature cache)")
    return True

def _not_spec(tfm, x, why:str)->ValueError:
    "The error for a float batch that is not a `TensorSpec` and cannot be normalized"
    return ValueError(f"{type(tfm).__name__} got a {type(x).__name__} of shape {list(x.shape)} and {why}. "
                      "It normalizes "
                      "spectrogram batches [B,C,F,T] (TensorSpec): make them with MelSpec, or wrap your own as "
                      "TensorSpec(x, cfg=SpecConfig(...))")

def _standardize(x, mean, std): return (x - mean) / std  # `SpecNormalize`'s formula, run by it and by `Standardize`

class Standardize(nn.Module):
    "`(x - mean) / std` with constant `mean` and `std` (buffers): the module of `SpecNormalize` and its subclasses"
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer('mean', const(mean))
        self.register_buffer('std', const(std))
    def forward(self, x): return _standardize(x, self.mean, self.std)

class SpecNormalize(DisplayedTransform):
    """Normalize (and denormalize, for `show_batch`) spectrogram batches `[B,C,F,T]` with a `mean` and `std`, on any
    device. Given none, `setups` computes them when the DataLoaders are built, exactly as `compute_stats` does: on the
    training set, after the transforms before this one, before augmentation. A float batch of another type (a plain
    tensor, a `TensorImage`) is normalized too when it fits the statistics, else it is an error: never passed on
    unchanged. Targets pass."""
    parameters, order = L('mean', 'std'), 99  # as fastai's `Normalize`: after `MelSpec` (5), before SpecAugment (100+)
    _axes = (0,2,3)
    @takes_stats_options
    def __init__(self, mean=None, # a `StatsRecorder`, or the mean: scalar, vector of kept values, broadcastable tensor
                 std=None, # the std (not with a `StatsRecorder`)
                 axes=None, # dims the statistics are reduced over (given without their kept shape, or computed)
                 eps:float=1e-6, # floor of `std`: zero-std entries get it (with a warning), never Inf
                 cfg=None, # spectrogram settings the statistics belong to; batches made otherwise are an error
                 **kwargs):
        "Statistics computed in `setups` are computed with the `StatsOptions` in `kwargs`"
        super().__init__()
        self.eps, self.opts, self.cfg = check_positive('eps', eps), StatsOptions(**kwargs), cfg
        self.axes = tuple(self._axes if axes is None else axes)
        self.mean = self.std = self.stats = None
        self.computed = mean is None and std is None  # statistics come from `setups`
        if isinstance(mean, StatsRecorder):
            if std is not None: raise ValueError("Give a `StatsRecorder` or `mean` and `std`, not both")
            self._use(mean, cfg)
        elif not self.computed:
            if mean is None or std is None:
                raise ValueError(f"{type(self).__name__} needs both `mean` and `std`, a `StatsRecorder`, or neither "
                                 "(then `setups` computes them from the training set)")
            self._set(mean, std, self.axes, cfg)

    def __setstate__(self, d):
        "Pickles of fastnorm <= 0.2 hold the `StatsOptions` one by one (and a `sync`, gone since)"
        if 'opts' not in d:
            d = {**d, 'opts': StatsOptions(**{k: d[k] for k in ('frac', 'n_batches', 'seed', 'progress') if k in d})}
        self.__dict__.update(d)
    def _from_recorder(self, stats): return stats
    def _use(self, stats:StatsRecorder, cfg=None):
        "Take mean, std, reduced dims and spectrogram settings from a recorder"
        stats = self._from_recorder(stats)
        self._set(stats.mean, stats.std, stats.red_dims, stats.cfg if cfg is None else cfg)
        self.stats = stats

    def _set(self, mean, std, axes, cfg):
        mean, std = _shape_to(mean, axes).float(), _shape_to(std, axes).float()
        if mean.shape != std.shape:
            raise ValueError(f"`mean` {list(mean.shape)} and `std` {list(std.shape)} must have the same shape")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("`mean` and `std` must be finite")
        if (std < 0).any(): raise ValueError("`std` must not be negative")
        small = std < self.eps
        if small.any():
            warnings.warn(f"{int(small.sum())} of {std.numel()} std values are below eps={self.eps}: "
                          "they are set to eps (zero-variance channels)")
            std = torch.where(small, torch.full_like(std, self.eps), std)
        self.mean, self.std, self.axes, self.cfg = mean, std, tuple(axes), cfg

    def setups(self, dl):
        "Compute the statistics from the training `DataLoader` `dl` when none were given (called as fastai builds it)"
        if not self.computed or dl is None: return
        try: stats = compute_stats(dl, red_dims=self.axes, **vars(self.opts))
        except (AttributeError, NotFoundLookupError) as e:  # fasttransform's `Transform.setup` would swallow these
            raise RuntimeError(f"{type(self).__name__} could not compute its statistics from the training DataLoader: "
                               f"{type(e).__name__}: {e}") from e
        old = self.mean
        self._use(stats)
        if old is not None and (old.shape != self.mean.shape or not torch.equal(old.to(self.mean.device), self.mean)):
            warnings.warn(f"This {type(self).__name__} held the statistics of another training set and now holds this "
                          "one's; DataLoaders built before with the same instance use them too: give each DataLoaders "
                          "its own normalizer")

    @property
    def name(self):
        if self.mean is None: return f"{type(self).__name__} -- statistics computed in setups\n"
        cfg = '' if self.cfg is None else f", cfg {self.cfg.key()}"
        return f"{type(self).__name__} -- kept shape {list(self.mean.shape)}{cfg}\n"

    def _need_stats(self):
        if self.mean is None:
            raise ValueError(f"{type(self).__name__} has no statistics yet: put it in `batch_tfms` so that building "
                             "the DataLoaders computes them, add it to existing DataLoaders with "
                             "`add_spec_norm(dls)`, or give mean and std")

    def _fits(self, x)->bool:
        return x.ndim == self.mean.ndim and all(m in (1, s) for m, s in zip(self.mean.shape, x.shape))
    def _check(self, x):
        self._need_stats()
        if not self._fits(x):
            raise ValueError(f"{type(self).__name__}: statistics of kept shape {list(self.mean.shape)} "
                             f"do not fit a batch of shape {list(x.shape)}")
        c = getattr(x, 'cfg', None)
        if self.cfg is not None and c is not None and c != self.cfg:
            diff = {k: (v, getattr(c, k)) for k, v in self.cfg.to_dict().items() if getattr(c, k) != v}
            raise ValueError(f"{type(self).__name__}: this batch was made with other spectrogram settings than the "
                             f"statistics: {diff} (stats, batch)")

    def _ms(self, x):
        m, s = self.mean, self.std
        if m.device != x.device or m.dtype != x.dtype: m, s = m.to(x.device, x.dtype), s.to(x.device, x.dtype)
        return m, s

    def to_module(self, cfg=None)->nn.Module:
        "`Standardize` with this transform's statistics (see `fastnorm.steps.InferenceStep`)"
        self._need_stats()
        return Standardize(self.mean, self.std)

    def to(self, device):
        "Move `mean` and `std` to `device` (called by `dls.to`)"
        if self.mean is not None: self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def encodes(self, x:TensorSpec):
        "`(x - mean) / std`; `x`: `[B,C,F,T]`, any device; keeps the type and `cfg`"
        self._check(x)
        m, s = self._ms(x)
        return _standardize(x, m, s)
    def encodes(self, x:torch.Tensor):
        "Another float batch of rank >= 3: normalized (keeping its type) if it fits the statistics, else an error"
        if not _is_batch(x): return x
        self._need_stats()
        if not self._fits(x):
            raise _not_spec(self, x, f"does not fit the statistics of kept shape {list(self.mean.shape)}")
        m, s = self._ms(x)
        return _standardize(x, m, s)
    def decodes(self, x:TensorSpec):
        "`x * std + mean`"
        if self.mean is None: return x
        m, s = self._ms(x)
        return x * s + m
    def decodes(self, x:torch.Tensor):
        "Undo `encodes` on a float batch of another type that fits the statistics"
        if self.mean is None or not (x.is_floating_point() and x.ndim >= 3 and self._fits(x)): return x
        m, s = self._ms(x)
        return x * s + m

class GlobalSpecNorm(SpecNormalize):
    "Normalize `TensorSpec` batches with one mean and std over the whole training set (per-channel stats pooled)"
    _axes = (0,1,2,3)
    def _from_recorder(self, stats):
        return stats if stats.red_dims == tuple(range(stats.ndim)) else stats.pool(range(stats.ndim))

class FreqSpecNorm(SpecNormalize):
    "Normalize `TensorSpec` batches with one mean and std per frequency bin (and channel): `axes` (0,3) of `[B,C,F,T]`"
    _axes = (0,3)
    def _from_recorder(self, stats):
        if all(s == 1 for s in stats.kept_shape):
            raise ValueError(f"{type(self).__name__} needs per-frequency-bin statistics "
                             "(e.g. compute_stats(dl, scope='freq')); these are global: use GlobalSpecNorm")
        return stats

class _ItemSpecNorm(DisplayedTransform):
    "Base of the normalizations computed from each item alone: subclasses give `to_module()` for a `[B,C,F,T]` batch"
    order = 99
    def _norm(self, x):
        check_batch4d(x, type(self).__name__)
        return self.to_module()(x)
    def encodes(self, x:TensorSpec):
        "`x`: `[B,C,F,T]`, any device"
        return TensorSpec(self._norm(x), cfg=getattr(x, 'cfg', None))
    def encodes(self, x:torch.Tensor):
        "Another float batch `[B,C,F,T]` (keeping its type); a float batch of other rank is an error; targets pass"
        if not _is_batch(x): return x
        if x.ndim != 4: raise _not_spec(self, x, "is not [B,C,F,T]")
        return self._norm(x)

def freq_instance_norm(x:torch.Tensor, # `[B,C,F,T]`, any device
                       lam:float=0., # λ: 0 gives IFN, 1 layer norm (per item over C,F,T), between them RFN
                       eps:float=1e-5, # added to the variances, as in the paper
                      )->torch.Tensor:
    """RFN (Kim et al., 2022): `lam * LN(x) + (1 - lam) * IFN(x)`; IFN normalizes each item and frequency bin over
    channels and time"""
    check_batch4d(x, 'freq_instance_norm')
    lam, eps = check_frac('lam', lam), check_positive('eps', eps)
    xt = plain(x)
    if not xt.is_floating_point(): xt = xt.float()
    var, mean = torch.var_mean(xt, (1, 3), keepdim=True, correction=0)
    ifn = (xt - mean) * torch.rsqrt(var + eps)
    if lam == 0: return ifn
    var, mean = torch.var_mean(xt, (1, 2, 3), keepdim=True, correction=0)
    return torch.lerp(ifn, (xt - mean) * torch.rsqrt(var + eps), lam)

class RelaxedFreqNorm(nn.Module):
    "RFN as a layer (Kim et al. 2022 put it inside the network, after conv blocks): `lam * LN(x) + (1 - lam) * IFN(x)`"
    def __init__(self, lam:float=0.5, # λ: 0 is IFN, 1 layer norm
                 eps:float=1e-5):
        super().__init__()
        self.lam, self.eps = check_frac('lam', lam), check_positive('eps', eps)
    def extra_repr(self): return f"lam={self.lam}"
    def forward(self, x): return freq_instance_norm(x, self.lam, self.eps)

class ItemNorm(nn.Module):
    "`InstanceSpecNorm('item')`: each item `[C,F,T]` by its own mean and std (population, floored at `eps`)"
    def __init__(self, eps:float=1e-6):
        super().__init__()
        self.eps = eps
    def forward(self, x):
        xp = plain(x)
        xf = xp.float() if xp.dtype not in (torch.float32, torch.float64) else xp
        std, mean = torch.std_mean(xf, (1,2,3), keepdim=True, correction=0)
        return (xf - mean) / std.clamp_min(self.eps)

_PER = ('item', 'freq')  # what `InstanceSpecNorm` gives its own mean and std

class InstanceSpecNorm(_ItemSpecNorm):
    """Normalize each item of a `TensorSpec` batch by its own statistics: one mean and std per item, or per item and
    frequency bin (`per='freq'`: IFN, computed by `freq_instance_norm`, as `FreqInstanceNorm(0.)`)"""
    def __init__(self, per:str='item', # 'item': one mean/std per item; 'freq': one per item and frequency bin
                 eps:float=1e-6, # per item: floor of its std, so a silent item gives zeros; per bin: IFN's eps
                ):
        super().__init__()
        self.per, self.eps = check_choice('per', per, _PER), check_positive('eps', eps)
    @property
    def name(self): return f"InstanceSpecNorm -- per {self.per}\n"
    def to_module(self, cfg=None)->nn.Module:
        "`ItemNorm`, or IFN (`RelaxedFreqNorm(0)`) per frequency bin"
        return RelaxedFreqNorm(0., self.eps) if self.per == 'freq' else ItemNorm(self.eps)

class ImageNetNorm(nn.Module):
    "`ImageNetSpecNorm`: each item min-max scaled to [0,1] (its range floored at `eps`), then `(x - mean) / std`"
    def __init__(self, eps:float, mean:float, std:float):
        super().__init__()
        self.eps, self.mean, self.std = eps, mean, std
    def forward(self, x):
        xp = plain(x).float()
        lo, hi = xp.amin((1,2,3), keepdim=True), xp.amax((1,2,3), keepdim=True)
        return ((xp - lo) / (hi - lo).clamp_min(self.eps) - self.mean) / self.std

class ImageNetSpecNorm(_ItemSpecNorm):
    """The "pretrained with ImageNet statistics" path: each spectrogram min-max scaled to [0,1] like an image, then
    normalized with ImageNet's mean and std averaged over RGB, as `Normalize.from_stats(*imagenet_stats)` does"""
    mean, std = 0.449, 0.226  # imagenet_stats ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) averaged over RGB
    def __init__(self, eps:float=1e-6): # floor of an item's value range, so a constant item gives (0 - mean)/std
        super().__init__()
        self.eps = check_positive('eps', eps)
    def to_module(self, cfg=None)->nn.Module: return ImageNetNorm(self.eps, self.mean, self.std)
    def decodes(self, x:TensorSpec):
        "Back to the [0,1] image (each item's own dB range is not kept)"
        return x * self.std + self.mean

_NORMALIZERS = (SpecNormalize, InstanceSpecNorm, ImageNetSpecNorm)  # what `add_spec_norm` replaces

def _fitted(cls):
    "How `add_spec_norm` builds a normalizer of the training set's statistics: given ones, or computed in `setups`"
    def make(stats, eps, **stat_kw):
        return cls(stats, eps=eps) if stats is not None else cls(eps=eps, **stat_kw)
    return make

class SpecNormKind(NamedTuple):
    "One `norm` of `add_spec_norm`: how to build its batch transform, and what it does"
    make:Callable  # (stats, eps, **statistics options) -> the batch transform
    doc:str = ''

# the registry of `add_spec_norm`'s `norm`s: a new one is its transform plus one entry here
SPEC_NORMS = {
    'freq': SpecNormKind(_fitted(FreqSpecNorm), 'one mean and std per frequency bin of the training set'),
    'global': SpecNormKind(_fitted(GlobalSpecNorm), 'one mean and std over the whole training set'),
    'instance': SpecNormKind(lambda stats, eps, **kw: InstanceSpecNorm('item', eps=eps),
                             'each item by its own mean and std'),
    'imagenet': SpecNormKind(lambda stats, eps, **kw: ImageNetSpecNorm(eps=eps),
                             "each item min-max scaled to [0,1], then ImageNet's mean and std"),
}

def _norm_tfm(norm, stats, eps, opts:StatsOptions):
    "The normalizer `add_spec_norm` adds: `SPEC_NORMS[norm]`'s (`opts`: the `StatsOptions` of one computing statistics)"
    norm = check_choice('norm', norm, tuple(SPEC_NORMS))
    return SPEC_NORMS[norm].make(stats, eps, **vars(opts))

@takes_stats_options
def add_spec_norm(dls, # fastai `DataLoaders` whose batches are `TensorSpec`
                  norm:str='freq', # a key of `SPEC_NORMS`: freq (per frequency bin), global, instance, imagenet
                  stats:StatsRecorder|None=None, # use these statistics instead of computing them
                  eps:float=1e-6, # std floor
                  **kwargs):
    """Add a normalizer to existing DataLoaders with fastai's `dls.add_tfms`, after `MelSpec` and before SpecAugment,
    replacing an earlier one; its statistics come from `dls.train` through the normalizer's `setups` (as in
    `batch_tfms`), computed with the `StatsOptions` in `kwargs`"""
    tfm = _norm_tfm(norm, stats, eps, StatsOptions(**kwargs))
    for dl in dls.loaders:  # drop an earlier normalizer: a new list per loader (loaders made with `new` share one)
        dl.after_batch.fs = dl.after_batch.fs.filter(lambda t: not isinstance(t, _NORMALIZERS))
    tfm.setup(dls.train)
    dev = getattr(dls, 'device', None) or getattr(dls.train, 'device', None)
    if isinstance(tfm, SpecNormalize) and dev is not None: tfm.to(dev)
    dls.add_tfms([tfm], 'after_batch')
    return dls
