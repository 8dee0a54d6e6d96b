"Normalize transforms for `TensorSpec` batches (global, per channel, per item) and `add_spec_norm`, the one-line fastai hook."
from __future__ import annotations
import warnings
import torch
from fastcore.basics import store_attr
from fastcore.foundation import L
from fastai.data.transforms import DisplayedTransform
from .spec import TensorSpec
from .stats import StatsRecorder, compute_stats

__all__ = ['SpecNormalize', 'GlobalSpecNorm', 'ChannelSpecNorm', 'InstanceSpecNorm', 'ImageNetSpecNorm', 'add_spec_norm']

def _shape_to(v, axes, ndim=4):
    "Tensor `v` reshaped to broadcast against rank-`ndim` batches: its dims fill the kept (non-`axes`) dims, right-aligned"
    v = torch.as_tensor(v, dtype=torch.float64 if not isinstance(v, torch.Tensor) else None)
    if isinstance(v, torch.Tensor) and type(v) is not torch.Tensor: v = v.as_subclass(torch.Tensor)
    if v.ndim == ndim: return v
    kept = [d for d in range(ndim) if d not in axes]
    sq = v.squeeze() if v.ndim > len(kept) else v
    if sq.ndim > len(kept): raise ValueError(f"A mean/std of shape {list(v.shape)} does not fit the kept dims {kept} of `axes`={tuple(axes)}")
    shape = [1]*ndim
    for d, s in zip(kept[len(kept)-sq.ndim:], sq.shape): shape[d] = s
    return sq.reshape(shape)

class SpecNormalize(DisplayedTransform):
    "Normalize (and denormalize, for `show_batch`) `TensorSpec` batches `[B,C,F,T]` with fixed `mean` and `std`, on any device"
    parameters, order = L('mean', 'std'), 99  # like fastai's `Normalize`: after `MelSpec` (5), before SpecAugment masks (100+)
    _axes = (0,2,3)
    def __init__(self, mean=None, # a `StatsRecorder`, or the mean: scalar, vector of kept values, or broadcastable tensor
                 std=None, # the std (not with a `StatsRecorder`)
                 axes=None, # dims the statistics were reduced over, for mean/std given without their kept shape
                 eps:float=1e-6, # floor of `std`: zero-std entries get it (with a warning), never Inf
                 cfg=None, # spectrogram settings the statistics belong to; batches made otherwise are an error
                ):
        super().__init__()
        if eps <= 0: raise ValueError(f"`eps` must be positive ({eps} given)")
        axes = tuple(self._axes if axes is None else axes)
        if isinstance(mean, StatsRecorder):
            if std is not None: raise ValueError("Give a `StatsRecorder` or `mean` and `std`, not both")
            stats = self._from_recorder(mean)
            mean, std, cfg = stats.mean, stats.std, stats.cfg if cfg is None else cfg
            axes = stats._dims
        elif mean is None or std is None: raise ValueError(f"{type(self).__name__} needs a `StatsRecorder`, or both `mean` and `std`")
        mean, std = _shape_to(mean, axes).float(), _shape_to(std, axes).float()
        if mean.shape != std.shape: raise ValueError(f"`mean` {list(mean.shape)} and `std` {list(std.shape)} must have the same shape")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()): raise ValueError("`mean` and `std` must be finite")
        if (std < 0).any(): raise ValueError("`std` must not be negative")
        small = std < eps
        if small.any():
            warnings.warn(f"{int(small.sum())} of {std.numel()} std values are below eps={eps}: they are set to eps (zero-variance channels)")
            std = torch.where(small, torch.full_like(std, eps), std)
        self.mean, self.std, self.axes, self.eps, self.cfg = mean, std, axes, eps, cfg

    def _from_recorder(self, stats): return stats
    @property
    def name(self):
        cfg = '' if self.cfg is None else f", cfg {self.cfg.key()}"
        return f"{type(self).__name__} -- kept shape {list(self.mean.shape)}{cfg}\n"

    def _check(self, x):
        if x.ndim != self.mean.ndim or any(m not in (1, s) for m, s in zip(self.mean.shape, x.shape)):
            raise ValueError(f"{type(self).__name__}: statistics of kept shape {list(self.mean.shape)} do not fit a batch of shape {list(x.shape)}")
        c = getattr(x, 'cfg', None)
        if self.cfg is not None and c is not None and c != self.cfg:
            diff = {k: (v, getattr(c, k)) for k, v in self.cfg.to_dict().items() if getattr(c, k) != v}
            raise ValueError(f"{type(self).__name__}: this batch was made with other spectrogram settings than the statistics: {diff} (stats, batch)")

    def _ms(self, x):
        m, s = self.mean, self.std
        if m.device != x.device or m.dtype != x.dtype: m, s = m.to(x.device, x.dtype), s.to(x.device, x.dtype)
        return m, s

    def to(self, device):
        "Move `mean` and `std` to `device` (called by `dls.to`)"
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def encodes(self, x:TensorSpec):
        "`(x - mean) / std`; `x`: `[B,C,F,T]`, any device; keeps the type and `cfg`"
        self._check(x)
        m, s = self._ms(x)
        return (x - m) / s
    def decodes(self, x:TensorSpec):
        "`x * std + mean`"
        m, s = self._ms(x)
        return x * s + m

class GlobalSpecNorm(SpecNormalize):
    "Normalize `TensorSpec` batches with one mean and std over the whole training set (per-channel stats are pooled exactly)"
    _axes = (0,1,2,3)
    def _from_recorder(self, stats):
        return stats if stats._dims == tuple(range(stats.ndim)) else stats.pool(range(stats.ndim))

class ChannelSpecNorm(SpecNormalize):
    "Normalize `TensorSpec` batches with one mean and std per channel and frequency bin (`axes` (0,3) of `[B,C,F,T]`)"
    _axes = (0,3)
    def _from_recorder(self, stats):
        if all(s == 1 for s in stats.kept_shape):
            raise ValueError("ChannelSpecNorm needs per-channel statistics (e.g. compute_stats(dl, kind='channel')); these are global: use GlobalSpecNorm")
        return stats

class InstanceSpecNorm(DisplayedTransform):
    "Normalize each item of a `TensorSpec` batch by its own mean and std: over the whole item, or per channel and bin over time"
    order = 99
    def __init__(self, kind:str='global', # 'global': one mean/std per item; 'channel': one per item, channel and frequency bin
                 eps:float=1e-6, # floor of each item's std, so a silent item gives zeros
                ):
        super().__init__()
        if kind not in ('global', 'channel'): raise ValueError(f"`kind` must be 'global' or 'channel' ({kind!r} given)")
        if eps <= 0: raise ValueError(f"`eps` must be positive ({eps} given)")
        store_attr()
    @property
    def name(self): return f"InstanceSpecNorm -- {self.kind}\n"
    def encodes(self, x:TensorSpec):
        "`x`: `[B,C,F,T]`, any device; each item (or item row) gets zero mean and unit (population) std"
        if x.ndim != 4: raise ValueError(f"InstanceSpecNorm expects [B,C,F,T] batches (shape {list(x.shape)} given)")
        dims = (1,2,3) if self.kind == 'global' else (3,)
        xp = x.as_subclass(torch.Tensor)
        xf = xp.float() if xp.dtype not in (torch.float32, torch.float64) else xp
        std, mean = torch.std_mean(xf, dims, keepdim=True, correction=0)
        return TensorSpec((xf - mean) / std.clamp_min(self.eps), cfg=getattr(x, 'cfg', None))

class ImageNetSpecNorm(DisplayedTransform):
    """The "pretrained with ImageNet statistics" path: each spectrogram min-max scaled to [0,1] like an image, then normalized
    with ImageNet's mean and std averaged over RGB, as fastai's `Normalize.from_stats(*imagenet_stats)` would do to an image"""
    order = 99
    mean, std = 0.449, 0.226  # imagenet_stats ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) averaged over the channels
    def __init__(self, eps:float=1e-6): # floor of an item's value range, so a constant item gives (0 - mean)/std
        super().__init__()
        if eps <= 0: raise ValueError(f"`eps` must be positive ({eps} given)")
        store_attr()
    def encodes(self, x:TensorSpec):
        "`x`: `[B,C,F,T]`, any device"
        if x.ndim != 4: raise ValueError(f"ImageNetSpecNorm expects [B,C,F,T] batches (shape {list(x.shape)} given)")
        xp = x.as_subclass(torch.Tensor).float()
        lo, hi = xp.amin((1,2,3), keepdim=True), xp.amax((1,2,3), keepdim=True)
        return TensorSpec(((xp - lo) / (hi - lo).clamp_min(self.eps) - self.mean) / self.std, cfg=getattr(x, 'cfg', None))
    def decodes(self, x:TensorSpec):
        "Back to the [0,1] image (each item's own dB range is not kept)"
        return x * self.std + self.mean

_SPEC_NORMS = (SpecNormalize, InstanceSpecNorm, ImageNetSpecNorm)

def add_spec_norm(dls, # fastai `DataLoaders` whose batches are `TensorSpec`
                  kind:str='channel', # 'channel', 'global', 'instance' (per item) or 'imagenet' (per-item [0,1], ImageNet stats)
                  frac:float=1.0, # fraction of the training batches the statistics are computed on
                  n_batches:int|None=None, # at most this many batches
                  seed:int=0, # seeds the choice of batches
                  stats:StatsRecorder|None=None, # use these statistics instead of computing them
                  progress:bool=False, # show a progress bar
                  eps:float=1e-6, # std floor
                 ):
    "Compute statistics on `dls.train` and insert the normalize transform in every `after_batch`: after `MelSpec`, before SpecAugment"
    if kind not in ('channel', 'global', 'instance', 'imagenet'):
        raise ValueError(f"`kind` must be 'channel', 'global', 'instance' or 'imagenet' ({kind!r} given)")
    if kind == 'instance': tfm = InstanceSpecNorm('global', eps=eps)
    elif kind == 'imagenet': tfm = ImageNetSpecNorm(eps=eps)
    else:
        if stats is None: stats = compute_stats(dls.train, kind=kind, frac=frac, n_batches=n_batches, seed=seed, progress=progress)
        tfm = (ChannelSpecNorm if kind == 'channel' else GlobalSpecNorm)(stats, eps=eps)
    dev = getattr(dls, 'device', None) or getattr(dls.train, 'device', None)
    if isinstance(tfm, SpecNormalize) and dev is not None: tfm.to(dev)
    for dl in dls.loaders:
        p = dl.after_batch  # a new list per loader (loaders made with `new` share the old one), dropping any earlier spec norm
        p.fs = L([t for t in p.fs if not isinstance(t, _SPEC_NORMS)] + [tfm]).sorted(key='order')
    return dls
