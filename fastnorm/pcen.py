"""Per-channel energy normalization (PCEN; Wang et al. 2017, Lostanlen et al. 2019) on batches, fixed or trainable.

PCEN replaces the log of a log-mel front end: it takes the *power* mel spectrogram (`MelSpec(db=False)`, or a dB one
it turns back into power with `from_db=True`) and comes before any other normalization. Its smoother is the first-order
IIR filter `M[t] = (1-s) M[t-1] + s E[t]` (librosa's `lfilter([s], [1, s-1])` with the same initial state), computed
without a loop over frames: a block linear recurrence, one small lower-triangular Toeplitz matmul per block of 48
frames plus the state carried in from the previous block. Every term is non-negative, so float32 keeps its relative
precision where the signal is quiet.

The smoother (`ema_filter`, one block size `_BLOCK`) and the formula (`_pcen_formula`) exist once: `pcen` runs them,
and so do the `PCEN` stem, `PCENTransform` (through its module `SpecPCEN`) and the exported ONNX chain."""
from __future__ import annotations
import math
import torch
from torch import nn
from fastai.data.transforms import DisplayedTransform
from .spec import TensorSpec
from .checks import check_int, check_number, check_positive
from .steps import plain, exporting

__all__ = ['pcen_smoothing', 'ema_filter', 'pcen', 'PCEN', 'PCENTransform', 'SpecPCEN']

def pcen_smoothing(sr:float, # sample rate of the audio (Hz)
                   hop_length:int, # hop between frames (samples)
                   time_constant:float=0.4, # the smoother's time constant (s)
                  )->float:
    "The smoothing coefficient `s` (librosa's `b`) for `time_constant` seconds, as `librosa.pcen` works it out"
    time_constant = check_positive('time_constant', time_constant)
    sr, hop_length = check_positive('sr', sr), check_positive('hop_length', hop_length)
    t = time_constant * sr / float(hop_length)
    return (math.sqrt(1 + 4 * t**2) - 1) / (2 * t**2)

def _as_band_param(v, x, name):
    "A scalar or a `[F]` per-band parameter as a tensor broadcasting against `x` `[..., F, T]` (shape `[F,1]` or `[]`)"
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0: return v
    if v.ndim != 1 or v.shape[0] != x.shape[-2]:
        raise ValueError(f"`{name}` must be a number or one value per frequency band ({x.shape[-2]}), "
                         f"not shape {list(v.shape)}")
    return v[:, None]

_BLOCK = 48  # frames per block: big enough for efficient matmuls, small enough that a block stays in cache

def ema_filter(x:torch.Tensor, # `[..., F, T]` non-negative input (e.g. a power spectrogram), any device
               s, # smoothing coefficient in [0, 1]: a number or `[F]` tensor (one per band, may require grad)
               init:float=1., # the state before the first frame, `M[-1]` (librosa's default initial condition gives 1)
              )->torch.Tensor:
    "`M[t] = (1-s) M[t-1] + s x[t]` along the last dim, `M[-1] = init`: a block linear recurrence, no loop over frames"
    if x.ndim < 2: raise ValueError(f"ema_filter expects `[..., F, T]` (shape {list(x.shape)} given)")
    s = _as_band_param(s, x, 's')
    if not exporting(): s = check_number('s', s, 0, 1)
    T = x.shape[-1]
    if T == 0 or x.numel() == 0: return x.clone()  # nothing to smooth
    nb = 1 if s.ndim == 0 else x.shape[-2]  # bands with their own coefficient
    x3 = x.reshape(-1, nb, T).transpose(0, 1)  # `[nb, N, T]`, a view: one batched matmul per block serves every band
    s3 = s.reshape(-1, 1, 1)
    a = 1 - s3
    L = min(T, _BLOCK)
    ar = torch.arange(L + 1, device=x.device, dtype=x.dtype)
    pw = a ** ar  # `[nb, 1, L+1]`: a^0..a^L, how the state entering a block decays over its frames
    d = ar[None, :L] - ar[:L, None]  # d[j, i] = i - j
    # KT[j, i] = s a^(i-j) for i >= j: frame j's share in frame i of its block from a zero state (`x @ KT`)
    KT = torch.where(d >= 0, s3 * a ** d.clamp(min=0), torch.zeros((), dtype=x.dtype, device=x.device))
    state = torch.full((nb, x3.shape[1], 1), init, dtype=x.dtype, device=x.device)  # M[-1]
    grad = exporting() or torch.is_grad_enabled() and (x.requires_grad or s.requires_grad)
    out = None if grad else torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out3, blocks = (None if grad else out.view(-1, nb, T).transpose(0, 1)), []
    for t0 in range(0, T, L):  # T/L blocks; inside a block all frames at once
        n = min(L, T - t0)
        xb, kb, pb = x3[..., t0:t0 + n], KT[:, :n, :n], pw[..., 1:n + 1]
        if grad:  # out of place, for autograd and export
            y = torch.baddbmm(torch.matmul(xb, kb), state, pb)
            blocks.append(y)
        else:  # written straight into the output: no padding, no copies
            y = out3[..., t0:t0 + n]
            torch.matmul(xb, kb, out=y)
            y.baddbmm_(state, pb)  # + a^(i+1) M_in: the state carried in from the previous block
        state = y[..., n - 1:]
    return torch.cat(blocks, -1).transpose(0, 1).reshape(x.shape) if grad else out

def pcen(S:torch.Tensor, # `[..., F, T]` power (or magnitude) mel spectrogram, non-negative, any device
         sr:float=22050, # sample rate (Hz), for the time constant
         hop_length:int=512, # hop (samples), for the time constant
         gain:float=0.98, # alpha: the AGC exponent (number or `[F]`)
         bias:float=2., # delta: added before the compression (number or `[F]`)
         power:float=0.5, # r: the compression exponent (number or `[F]`)
         time_constant:float=0.4, # the smoother's time constant (s)
         eps:float=1e-6, # floor of the smoother
         s=None, # smoothing coefficient (librosa's `b`), number or `[F]`; default from `time_constant`
        )->torch.Tensor:
    "`librosa.pcen(S, sr=sr, hop_length=hop_length, ...)` along the last dim of a batch (its defaults, `max_size=1`)"
    S = plain(S) if isinstance(S, torch.Tensor) else torch.as_tensor(S)
    if not S.is_floating_point(): S = S.float()
    eps = check_positive('eps', eps)
    if not exporting():  # checks that read the data: not while tracing
        for name, v in (('gain', gain), ('bias', bias), ('power', power)): check_number(name, v, lo=0)
        if S.numel() and float(S.min()) < 0:
            raise ValueError("pcen expects a non-negative (power or magnitude) spectrogram: turn dB into power first")
    if s is None: s = pcen_smoothing(sr, hop_length, time_constant)
    M = ema_filter(S, s)
    params = (S, gain, bias, power, s)
    grad = torch.is_grad_enabled() and any(isinstance(v, torch.Tensor) and v.requires_grad for v in params)
    kind = _kind(bias, power)
    gain, bias, power = (_as_band_param(v, S, k) for k, v in (('gain', gain), ('bias', bias), ('power', power)))
    if grad or exporting(): return _pcen_formula(M, S, gain, bias, power, eps, kind)
    # inference: the same formula in place on M's buffer, a few items at a time so that a chunk's passes stay in cache
    if M.numel() == 0: return M
    Mi, Si = M.view(-1, *M.shape[-2:]), S.reshape(-1, *S.shape[-2:])
    step = max(1, _CHUNK // max(1, M.shape[-2] * M.shape[-1]))
    tmp = torch.empty_like(Mi[:step]) if kind == 'sqrt' else None
    for i in range(0, len(Mi), step):
        _pcen_formula(Mi[i:i + step], Si[i:i + step], gain, bias, power, eps, kind, out=Mi[i:i + step],
                      tmp=None if tmp is None else tmp[:len(Mi[i:i + step])])
    return M

_CHUNK = 1 << 18  # elements per chunk of the in-place passes (1 MB of float32)

def _is(v, c:float)->bool: return (not isinstance(v, torch.Tensor) or v.ndim == 0) and float(v) == c

def _kind(bias, power)->str:
    "Which of librosa's forms `_pcen_formula` takes: 'log' (power 0), 'pow' (bias 0), 'sqrt' (power 1/2) or 'general'"
    if _is(power, 0): return 'log'
    if _is(bias, 0): return 'pow'
    return 'sqrt' if _is(power, .5) else 'general'

def _pcen_formula(M, S, gain, bias, power, eps, kind:str, out=None, tmp=None):
    """PCEN from the smoother `M`: `(S (eps + M)^-gain + bias)^power - bias^power` (librosa's formulas, in the form
    `kind` of `_kind`), written into `out` (which may be `M`; `tmp`, like it, for the 'sqrt' form) when given, else out
    of place (autograd, export). The power 1/2 form `z / (sqrt(z + d) + sqrt(d))` is as exact as log1p/expm1, ~3x
    cheaper"""
    o = dict(out=out)
    z = torch.mul(torch.exp(torch.mul(torch.log(torch.add(M, eps, **o), **o), -gain, **o), **o), S, **o)
    if kind == 'log': return torch.log1p(z, **o)
    if kind == 'pow': return torch.pow(z, power, **o)
    if kind == 'sqrt':
        t = torch.sqrt(torch.add(z, bias, out=tmp), out=tmp)
        return torch.div(z, torch.add(t, torch.sqrt(bias), out=tmp), **o)
    return torch.mul(torch.expm1(torch.mul(torch.log1p(torch.div(z, bias, **o), **o), power, **o), **o), bias ** power,
                     **o)

def _inv_sigmoid(v): return math.log(v / (1 - v))

class PCEN(nn.Module):
    """PCEN as a model stem: `x` `[B,C,F,T]` power mel spectrogram (or dB, with `from_db=True`) to PCEN, with one
    `gain`, `bias`, `power` and smoothing coefficient per frequency band, fixed or learned (in log space, as Lostanlen
    et al.; `s` as a logit)"""
    def __init__(self, n_bands:int, # mel bins F
                 sr:float=16000, hop_length:int=256, # the spectrogram's rate and hop, for `time_constant`
                 gain:float=0.98, bias:float=2., power:float=0.5, # librosa's defaults
                 time_constant:float=0.4, eps:float=1e-6, # librosa's defaults
                 trainable:bool=True, # learn the four per-band parameters
                 from_db:bool=False, # the input is in dB (10 log10 of power: `MelSpec(db=True)`, the feature cache)
                 scale:float=1., # multiply the power by this first (librosa's docs use 2**31 for float audio)
                ):
        super().__init__()
        n_bands = check_int('n_bands', n_bands, lo=1)
        # learned in log space, so none of them may be 0
        for name, v in (('gain', gain), ('bias', bias), ('power', power), ('scale', scale), ('eps', eps)):
            check_positive(name, v)
        s = pcen_smoothing(sr, hop_length, time_constant)
        # `[4,F]`
        init = torch.tensor([math.log(gain), math.log(bias), math.log(power), _inv_sigmoid(s)]).repeat(n_bands, 1).T
        p = nn.Parameter(init.clone(), requires_grad=trainable)
        self.params = p
        self.n_bands, self.eps, self.from_db, self.scale, self.trainable = n_bands, eps, from_db, scale, trainable
    @property
    def gain(self): return self.params[0].exp()
    @property
    def bias(self): return self.params[1].exp()
    @property
    def power(self): return self.params[2].exp()
    @property
    def s(self): return torch.sigmoid(self.params[3])
    def extra_repr(self):
        return f"n_bands={self.n_bands}, trainable={self.trainable}, from_db={self.from_db}, scale={self.scale:g}"
    def forward(self, x):
        x = plain(x) if isinstance(x, torch.Tensor) else torch.as_tensor(x)
        if x.shape[-2] != self.n_bands:
            raise ValueError(f"PCEN was made for {self.n_bands} frequency bands but the input has {x.shape[-2]} "
                             f"(shape {list(x.shape)})")
        S = torch.pow(10., x / 10) if self.from_db else x
        if self.scale != 1: S = S * self.scale
        return pcen(S, gain=self.gain, bias=self.bias, power=self.power, eps=self.eps, s=self.s)

class PCENTransform(DisplayedTransform):
    "Fixed PCEN as a batch transform on `TensorSpec` `[B,C,F,T]`: in place of the log, before any other normalization"
    order = 98  # after `MelSpec` (5), before normalizations (99) and SpecAugment
    def __init__(self, gain:float=0.98, bias:float=2., power:float=0.5, # librosa's defaults
                 time_constant:float=0.4, eps:float=1e-6, # librosa's defaults
                 scale:float=1., # multiply the power by this first
                ):
        super().__init__()
        for name, v in (('gain', gain), ('bias', bias), ('power', power)): check_number(name, v, lo=0)
        self.gain, self.bias, self.power = gain, bias, power
        self.time_constant, self.eps = check_positive('time_constant', time_constant), check_positive('eps', eps)
        self.scale = check_positive('scale', scale)
    def to_module(self, cfg)->nn.Module:
        "`SpecPCEN` for spectrograms of `cfg` (its sr and hop set the time constant, `db` and `power` the undoing)"
        return SpecPCEN(cfg, self.gain, self.bias, self.power, self.time_constant, self.eps, self.scale)
    def encodes(self, x:TensorSpec):
        "`x`: `[B,C,F,T]`; a dB spectrogram (its `cfg.db`) is turned back into power first; returns PCEN (cfg kept)"
        cfg = getattr(x, 'cfg', None)
        if cfg is None:
            raise ValueError("PCENTransform needs a TensorSpec with its `cfg` (its sr and hop set the time constant)")
        return TensorSpec(self.to_module(cfg)(plain(x).float()), cfg=cfg)

class SpecPCEN(nn.Module):
    "`PCENTransform`'s computation on a `[B,C,F,T]` spectrogram of `cfg`: dB back to power, times `scale`, then `pcen`"
    def __init__(self, cfg, gain:float, bias:float, power:float, time_constant:float, eps:float, scale:float):
        super().__init__()
        self.s = pcen_smoothing(cfg.sr, cfg.hop_length, time_constant)
        self.db, self.div = cfg.db, (20. if cfg.power == 1 else 10.)
        self.gain, self.bias, self.power, self.eps, self.scale = gain, bias, power, eps, scale
    def forward(self, x):
        S = torch.pow(10., x / self.div) if self.db else x
        return pcen(S * self.scale, gain=self.gain, bias=self.bias, power=self.power, eps=self.eps, s=self.s)
