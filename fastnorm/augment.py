"""SpecAugment (Park et al., 2019) as vectorized batch transforms on `TensorSpec` `[B,C,F,T]`: frequency masks, time
masks, time warp, the paper's policies"""
from __future__ import annotations
import math
import torch
from fastcore.basics import store_attr
from fastcore.meta import delegates
from fastai.torch_core import retain_type
from .batchrand import BatchRandTransform
from .checks import check_frac, check_int, check_mask_value, check_batch4d, check_choice
from .spec import TensorSpec

__all__ = ['SPECAUGMENT_POLICIES', 'span_mask', 'apply_masks', 'warp_positions', 'time_warp',
           'FreqMask', 'TimeMask', 'TimeWarp', 'SpecAugment', 'show_augment']

# Park et al. 2019, Table 1 (W, F, mF, T, p, mT); `max_frac` is the paper's p, the time mask's upper bound as a
# fraction of the clip
SPECAUGMENT_POLICIES = {
    'LB': dict(time_warp=80, freq_mask_param=27, n_freq_mask=1, time_mask_param=100, max_frac=1.0, n_time_mask=1),
    'LD': dict(time_warp=80, freq_mask_param=27, n_freq_mask=2, time_mask_param=100, max_frac=1.0, n_time_mask=2),
    'SM': dict(time_warp=40, freq_mask_param=15, n_freq_mask=2, time_mask_param=70, max_frac=0.2, n_time_mask=2),
    'SS': dict(time_warp=40, freq_mask_param=27, n_freq_mask=2, time_mask_param=40, max_frac=0.2, n_time_mask=2),
}

_BATCH_HINT = "use it as a batch transform (`batch_tfms`), or add a batch dimension with `x[None]`"

# ---- pure functions: deterministic given their parameters
def span_mask(length:int, # size of the masked axis
              starts:torch.Tensor, # `[B,n]` first masked index of each span
              widths:torch.Tensor, # `[B,n]` span widths (0: nothing masked)
             )->torch.Tensor:
    "`[B,length]` bool, True inside any span `[start, start+width)`; built by comparison with `arange`, no loop"
    ar = torch.arange(length, device=starts.device)
    return ((ar >= starts[..., None]) & (ar < (starts + widths)[..., None])).any(-2)

def apply_masks(x:torch.Tensor, # `[B,C,F,T]` spectrogram batch, any device
                freq:torch.Tensor|None=None, # `[B,F]` bool: frequency rows to mask
                time:torch.Tensor|None=None, # `[B,T]` bool: time frames to mask
                mask_value:float|str=0., # a number, or 'mean' for each item's own mean
                inplace:bool=False, # write into `x` itself (only for a batch you just made, e.g. a warp's output)
               )->torch.Tensor:
    """A new batch with the masked rows and frames of each item set to `mask_value` (all channels alike); `x` is left
    as it is"""
    xt = x.as_subclass(torch.Tensor)
    ks = [k for k in ((~freq).to(x.dtype)[:, None, :, None] if freq is not None else None,
                      (~time).to(x.dtype)[:, None, None, :] if time is not None else None) if k is not None]
    if not ks: return x if inplace else retain_type(xt.clone(), old=x)
    # one new tensor, then in place: no full-size temporaries. With 0, x*1 is x and x*0 is 0; otherwise lerp, which is
    # exact at its ends (weight 1 returns x, weight 0 returns the value). Inputs must be finite.
    if not isinstance(mask_value, str) and mask_value == 0:
        out = xt.mul_(ks[0]) if inplace else torch.mul(xt, ks[0])
        for k in ks[1:]: out.mul_(k)
    else:
        # a new [B,1,1,1] (or [1,1,1,1]) tensor, so it stays put while an in-place `x` is overwritten
        if isinstance(mask_value, str): v = xt.mean((1, 2, 3), keepdim=True)
        else: v = xt.new_full((1, 1, 1, 1), mask_value)
        v = v.expand_as(xt)
        out = torch.lerp(v, xt, ks[0], out=xt) if inplace else torch.lerp(v, xt, ks[0])
        for k in ks[1:]: torch.lerp(v, out, k, out=out)
    return retain_type(out, old=x)

def warp_positions(n_frames:int, # τ, frames in the clip
                   center:torch.Tensor, # `[B]` the point w0 that moves, in frames
                   shift:torch.Tensor, # `[B]` how far it moves (w), in frames
                  )->torch.Tensor:
    """`[B,τ]` source position of every output frame: w0 lands on w0+w, frames 0 and τ-1 stay, both sides stretch
    linearly"""
    j = torch.arange(n_frames, dtype=torch.float32, device=center.device)
    c, w = center.float()[:, None], shift.float()[:, None]
    d = (c + w).clamp(1e-3, n_frames - 1 - 1e-3)  # where w0 lands; kept inside (0, τ-1) so both sides have length
    hat = torch.where(j <= d, j / d, (n_frames - 1 - j) / (n_frames - 1 - d))  # 0 at both ends, 1 at the landing point
    return j - w * hat  # w = 0 gives exactly j: the identity

def time_warp(x:torch.Tensor, # `[B,C,F,T]` spectrogram batch, any device, T >= 2
              center:torch.Tensor, # `[B]` warp point w0 of each item (frames)
              shift:torch.Tensor, # `[B]` displacement w of each item (frames)
             )->torch.Tensor:
    "Warp each item along time by linear interpolation at `warp_positions`: two gathers and a lerp over the batch"
    B, C, nf, nt = x.shape
    src = warp_positions(nt, center.to(x.device), shift.to(x.device))
    i0 = src.floor().long().clamp(0, nt - 2)
    frac = (src - i0).to(x.dtype)[:, None, None, :]
    xt = x.as_subclass(torch.Tensor)
    out = xt.gather(-1, i0[:, None, None, :].expand(B, C, nf, nt))
    out.lerp_(xt.gather(-1, (i0 + 1)[:, None, None, :].expand(B, C, nf, nt)), frac)
    return retain_type(out, old=x)

# ---- transforms
class _SpecAug(BatchRandTransform):
    "Base of the SpecAugment transforms: spans for the masks and the warp, drawn per item"
    def _spans(self, x, prefix, n, size, max_w, on):
        "Widths U{0..max_w} and starts U{0..size-width}, `[B,n]` each; items with `on` False get width 0"
        B = x.shape[0]
        w = self._pinned(x, f'{prefix}width', (B, n), torch.long)
        if w is None: w = (self._rand(x, B, n) * (max_w + 1)).long().clamp(max=max_w)
        s = self._pinned(x, f'{prefix}start', (B, n), torch.long)
        if s is None: s = (self._rand(x, B, n) * (size - w + 1)).long().clamp(max=size - w)
        return s, w * on[:, None]

    def _freq(self, x, F, n, on, prefix=''):
        nf = x.shape[-2]
        if F > nf:
            raise ValueError(f"`freq_mask_param` = {F} exceeds the {nf} frequency bins of the batch: use "
                             f"freq_mask_param <= {nf}")
        if n == 0 or F == 0: return None
        return span_mask(nf, *self._spans(x, prefix, n, nf, F, on))

    def _time(self, x, T, n, max_frac, on, prefix=''):
        nt, T = x.shape[-1], min(T, int(max_frac * x.shape[-1]))
        if n == 0 or T == 0: return None
        return span_mask(nt, *self._spans(x, prefix, n, nt, T, on))

    def _warp(self, x, W, short, on):
        nt = x.shape[-1]
        if W == 0: return x
        if 2 * W >= nt - 1:
            if short == 'skip': return x
            raise ValueError(f"`time_warp` = {W} must be less than half the clip, (τ-1)/2 = {(nt - 1) / 2} for "
                             f"τ = {nt} frames: use a smaller time_warp, or short='skip' to leave clips this short "
                             "unwarped")
        B = x.shape[0]
        c = self._pinned(x, 'center', (B,), torch.float32)
        if c is None: c = W + self._rand(x, B) * (nt - 1 - 2 * W)
        w = self._pinned(x, 'shift', (B,), torch.float32)
        if w is None: w = (self._rand(x, B) * 2 - 1) * W
        return time_warp(x, c, w * on)

class FreqMask(_SpecAug):
    """Mask `n_freq_mask` bands of f ~ U{0..F} consecutive frequency rows (F: `freq_mask_param`) from f0 ~ U{0..v-f},
    independently per item. `x`: `[B,C,F,T]`, any device"""
    order = 101  # after normalization (99) and TimeWarp (100): a `mask_value` of 0 is then the dataset mean
    draw_keys = ('width', 'start', 'apply')  # `[B,n]`, `[B,n]`, `[B]`
    @delegates(BatchRandTransform.__init__)
    def __init__(self, freq_mask_param:int, # F: largest band width (rows); must not exceed the batch's frequency bins
                 n_freq_mask:int=1, # mF: bands per item
                 mask_value:float|str=0., # a number, or 'mean' for each item's own mean
                 **kwargs):
        super().__init__(**kwargs)
        self.freq_mask_param = check_int('freq_mask_param', freq_mask_param)
        self.n_freq_mask, self.mask_value = check_int('n_freq_mask', n_freq_mask), check_mask_value(mask_value)
    def encodes(self, x:TensorSpec):
        check_batch4d(x, 'FreqMask', _BATCH_HINT)
        freq = self._freq(x, self.freq_mask_param, self.n_freq_mask, self._apply(x))
        return apply_masks(x, freq=freq, mask_value=self.mask_value)

class TimeMask(_SpecAug):
    """Mask `n_time_mask` spans of t ~ U{0..T} frames (T: `time_mask_param`, at most `max_frac` of the clip) from
    t0 ~ U{0..τ-t}, independently per item. `x`: `[B,C,F,T]`"""
    order = 102
    draw_keys = ('width', 'start', 'apply')  # `[B,n]`, `[B,n]`, `[B]`
    @delegates(BatchRandTransform.__init__)
    def __init__(self, time_mask_param:int, # T: largest span (frames), capped at `max_frac` of the clip
                 n_time_mask:int=1, # mT: spans per item
                 max_frac:float=1., # the paper's p: no span is longer than this fraction of the clip
                 mask_value:float|str=0., # a number, or 'mean' for each item's own mean
                 **kwargs):
        super().__init__(**kwargs)
        self.time_mask_param = check_int('time_mask_param', time_mask_param)
        self.n_time_mask, self.max_frac = check_int('n_time_mask', n_time_mask), check_frac('max_frac', max_frac)
        self.mask_value = check_mask_value(mask_value)
    def encodes(self, x:TensorSpec):
        check_batch4d(x, 'TimeMask', _BATCH_HINT)
        time = self._time(x, self.time_mask_param, self.n_time_mask, self.max_frac, self._apply(x))
        return apply_masks(x, time=time, mask_value=self.mask_value)

class TimeWarp(_SpecAug):
    """The paper's time warp: w0 ~ U(W, τ-1-W) moves by w ~ U(-W, W) (W: `time_warp`), frames 0 and τ-1 fixed, linear
    in between. `x`: `[B,C,F,T]`"""
    order = 100  # first of the SpecAugment steps, after normalization
    draw_keys = ('center', 'shift', 'apply')  # frames, `[B]` each
    @delegates(BatchRandTransform.__init__)
    def __init__(self, time_warp:int, # W: largest displacement (frames); needs W < (τ-1)/2
                 p:float=1., # probability of warping each item
                 short:str='error', # clips with W >= (τ-1)/2: 'error' raises, 'skip' leaves the batch unwarped
                 **kwargs):
        super().__init__(p=p, **kwargs)
        self.time_warp, self.short = check_int('time_warp', time_warp), check_choice('short', short, ('error', 'skip'))
    def encodes(self, x:TensorSpec):
        check_batch4d(x, 'TimeWarp', _BATCH_HINT)
        return self._warp(x, self.time_warp, self.short, self._apply(x))

class SpecAugment(_SpecAug):
    """Time warp, then frequency and time masks in one pass, with the TF layer's argument names or a policy of the
    paper ('LB', 'LD', 'SM', 'SS')"""
    order = 100
    draw_keys = ('center', 'shift', 'freq_width', 'freq_start', 'time_width', 'time_start', 'apply')
    @delegates(BatchRandTransform.__init__)
    def __init__(self, freq_mask_param:int|None=None, # F: largest frequency band (rows)
                 time_mask_param:int|None=None, # T: largest time span (frames)
                 n_freq_mask:int|None=None, # mF: frequency bands per item (default 1)
                 n_time_mask:int|None=None, # mT: time spans per item (default 1)
                 mask_value:float|str|None=None, # a number (default 0: the mean, once normalized) or 'mean' per item
                 time_warp:int|None=None, # W: largest warp displacement (frames); 0 (default) for no warp
                 p:float=1., # probability of augmenting each item
                 policy:str|None=None, # fill unset arguments from `SPECAUGMENT_POLICIES`
                 max_frac:float|None=None, # the paper's p: time spans at most this fraction of the clip (default 1)
                 adaptive:bool=False, # Park et al. 2020: mT = min(max_time_masks, ⌊p_m τ⌋), T = ⌊p_s τ⌋
                 p_m:float=0.04, # adaptive multiplicity: time masks per frame
                 p_s:float=0.04, # adaptive size: largest time span as a fraction of the clip
                 max_time_masks:int=20, # adaptive: at most this many time masks
                 short:str='skip', # clips with W >= (τ-1)/2: 'skip' leaves them unwarped (but masked), 'error' raises
                 **kwargs):
        super().__init__(p=p, **kwargs)
        args = dict(freq_mask_param=freq_mask_param, time_mask_param=time_mask_param, n_freq_mask=n_freq_mask,
                    n_time_mask=n_time_mask, mask_value=mask_value, time_warp=time_warp, max_frac=max_frac)
        if policy is not None:
            policy = check_choice('policy', policy, tuple(SPECAUGMENT_POLICIES))
            args = {k: SPECAUGMENT_POLICIES[policy].get(k) if v is None else v for k, v in args.items()}
        defaults = dict(freq_mask_param=0, time_mask_param=0, n_freq_mask=1, n_time_mask=1, mask_value=0., time_warp=0,
                        max_frac=1.)
        a = {k: defaults[k] if v is None else v for k, v in args.items()}
        for k in ('freq_mask_param', 'time_mask_param', 'n_freq_mask', 'n_time_mask', 'time_warp'):
            setattr(self, k, check_int(k, a[k]))
        self.max_frac, self.mask_value = check_frac('max_frac', a['max_frac']), check_mask_value(a['mask_value'])
        self.p_m, self.p_s = check_frac('p_m', p_m), check_frac('p_s', p_s)
        self.max_time_masks = check_int('max_time_masks', max_time_masks)
        self.short = check_choice('short', short, ('error', 'skip'))
        store_attr('policy,adaptive')

    def time_masks(self, n_frames:int)->tuple[int,int]:
        "(number, largest size) of the time masks for a clip of `n_frames`, adaptive or fixed"
        if self.adaptive: return min(self.max_time_masks, int(self.p_m * n_frames)), int(self.p_s * n_frames)
        return self.n_time_mask, self.time_mask_param

    def encodes(self, x:TensorSpec):
        check_batch4d(x, 'SpecAugment', _BATCH_HINT)
        on = self._apply(x)
        y = self._warp(x, self.time_warp, self.short, on)
        mT, T = self.time_masks(x.shape[-1])
        freq = self._freq(x, self.freq_mask_param, self.n_freq_mask, on, 'freq_')
        time = self._time(x, T, mT, self.max_frac, on, 'time_')
        # the warp's output is ours to overwrite
        return apply_masks(y, freq=freq, time=time, mask_value=self.mask_value, inplace=y is not x)

    def __repr__(self):
        return (f"SpecAugment(freq_mask_param={self.freq_mask_param}, n_freq_mask={self.n_freq_mask}, "
                f"time_mask_param={self.time_mask_param}, n_time_mask={self.n_time_mask}, time_warp={self.time_warp}, "
                f"max_frac={self.max_frac}, mask_value={self.mask_value}, p={self.p}, policy={self.policy}, "
                f"adaptive={self.adaptive})")

def show_augment(spec:torch.Tensor, # one spectrogram `[C,F,T]` (or a batch, whose first item is used)
                 tfm, # a transform (or `Pipeline`, or any callable) on `[B,C,F,T]` batches
                 n:int=4, # augmented versions to show
                 ncols:int|None=None, # columns of the grid, default n+1 (one row)
                 figsize:tuple|None=None, # figure size, default 3.2 x 2.6 per panel
                 fname=None, # save the figure as PNG here
                 titles:bool=True, # label each panel
                 title:str|None=None, # a title over the whole figure
                ):
    """A figure of the original spectrogram beside `n` augmented versions (the training-set behaviour), like the TF
    layer's README"""
    import matplotlib.pyplot as plt
    from fasttransform import Transform, Pipeline
    if spec.ndim == 4: spec = spec[0]
    if spec.ndim != 3: raise ValueError(f"`spec` must be `[C,F,T]` or `[B,C,F,T]` (shape {tuple(spec.shape)} given)")
    n = check_int('n', n, lo=1)
    xb = spec[None].repeat(n, 1, 1, 1)  # `repeat` keeps the TensorSpec's `cfg` (fastai's `clone` drops it)
    if isinstance(tfm, Transform): out = tfm(xb, split_idx=0)
    elif isinstance(tfm, Pipeline):
        old, tfm.split_idx = tfm.split_idx, 0
        try: out = tfm(xb)
        finally: tfm.split_idx = old
    else: out = tfm(xb)
    ncols = ncols or n + 1
    nrows = math.ceil((n + 1) / ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=figsize or (3.2 * ncols, 2.6 * nrows), squeeze=False,
                            constrained_layout=True)
    axs = axs.flatten()
    vmin, vmax = float(spec.min()), float(spec.max())
    def show(t, ax, title):
        if hasattr(t, 'show'): return t.show(ctx=ax, colorbar=False, title=title, vmin=vmin, vmax=vmax)
        return ax.imshow(torch.as_tensor(t)[0].cpu().numpy(), origin='lower', aspect='auto', vmin=vmin, vmax=vmax)
    show(spec, axs[0], 'original' if titles else None)
    for i in range(n): show(out[i], axs[i + 1], f'augmented {i + 1}' if titles else None)
    for ax in axs[n + 1:]: ax.axis('off')
    if title is not None: fig.suptitle(title)
    if fname is not None: fig.savefig(fname, dpi=100)
    return fig
