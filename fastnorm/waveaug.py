"""Waveform augmentations as vectorized, train-only batch transforms on `AudioTensor` `[B,C,N]`: noise at a target SNR,
noise bursts, band-stop, aliasing, soft-clipping distortion.

Order: after `AudioNormalize` (1), before `MelSpec` (5). Channel effects come first and noise last, so the noise
itself is neither filtered nor distorted and the SNR you ask for is the SNR you get: `BandStop` 2, `Alias` 2.5,
`Distortion` 3, `AddNoise` 4, `BurstNoise` 4.5. All of them are scale-invariant (SNR and peak are measured on each
item), so they work on raw or normalized audio.

Padded batches of clips of different lengths: give the batch a `lengths` attribute (`AudioTensor(x, sr=sr,
lengths=...)`, `[B]` samples that are real, the rest being padding). Then the SNR is measured on each item's own
samples, noise and bursts stay inside them, and the padding comes out as it went in."""
from __future__ import annotations
from typing import NamedTuple
import torch
from fastai.torch_core import retain_type
from .audio import AudioTensor
from fastcore.meta import delegates
from .augment import span_mask
from .batchrand import BatchRandTransform
from .noise import NoiseClips
from .checks import check_int, check_positive, check_range, check_choice, check_number

__all__ = ['colored_noise', 'NoiseClips', 'AddNoise', 'BurstNoise', 'BandStop', 'Alias', 'Distortion']

class _Valid(NamedTuple):
    "The real samples of a padded batch: `mask` `[B,1,N]` bool, `n` `[B,1,1]` float64 counts"
    mask:torch.Tensor
    n:torch.Tensor

def _energy(x):
    "Per item sum of squares `[B,1,1]` in float64: float32 partial sums of 128 samples (error ~1e-8), added in float64"
    sq = x.square().reshape(x.shape[0], -1)
    if sq.shape[1] % 128: sq = torch.nn.functional.pad(sq, (0, 128 - sq.shape[1] % 128))
    return sq.view(x.shape[0], -1, 128).sum(-1).double().sum(-1)[:, None, None]

def _rms(x, valid=None):
    "Per item, over channels and (the `valid`) samples: `[B,1,1]` float64"
    if valid is None: return (_energy(x) / (x.shape[-1] * x.shape[-2])).sqrt()
    return (_energy(torch.where(valid.mask, x, 0.)) / (valid.n * x.shape[-2])).sqrt()

_COLORS = ('white', 'pink')

def colored_noise(shape, # `(..., N)`
          color:str='white', # 'white' (flat spectrum) or 'pink' (power ∝ 1/f, no DC)
          generator:torch.Generator|None=None, # RNG (default: torch's global one)
          device=None, # where to make it
         )->torch.Tensor:
    "Gaussian noise of `color`, each row scaled to unit rms"
    dev = generator.device if generator is not None else device
    n = torch.randn(shape, generator=generator, device=dev).to(device)
    if color == 'pink':
        f = torch.fft.rfft(n)
        k = torch.arange(f.shape[-1], device=n.device, dtype=n.dtype)
        n = torch.fft.irfft(f * torch.where(k > 0, k.clamp(min=1).rsqrt(), torch.zeros_like(k)), n=shape[-1])
    else: check_choice('color', color, _COLORS)
    return n / n.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)

class _WaveAug(BatchRandTransform):
    """Base: train-only, per-item `p`, torch RNG (global, `generator` or `seed`), `draw=` pins parameters; `[C,N]`
    items go through as batches of one"""
    _keeps_padding = False  # True: `augment` leaves the padding of a batch with `lengths` as it is
    def _uniform(self, x, name, rng, shape=None):
        "Per-item values U(rng) `[B]` (or `shape`), unless pinned by `draw`"
        shape = shape or (x.shape[0],)
        got = self._pinned(x, name, shape, torch.float32)
        return got if got is not None else rng[0] + (rng[1] - rng[0]) * self._rand(x, *shape)

    def _noise(self, x, color, valid=None):
        "Coloured noise like `x`, unit rms over each item's valid samples, zero outside them"
        n = colored_noise(x.shape, color, self._gen(x.device), x.device)
        return n if valid is None else torch.where(valid.mask, n, 0.) / _rms(n, valid).float()

    def encodes(self, x:AudioTensor):
        if x.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__} expects audio `[B,C,N]` (or `[C,N]`), "
                             f"shape {tuple(x.shape)} given")
        xt = x.as_subclass(torch.Tensor).float()
        xb = xt[None] if x.ndim == 2 else xt
        valid = _valid(xb, getattr(x, 'lengths', None)) if x.ndim == 3 else None
        on = self._apply(xb)
        out = self.augment(xb, getattr(x, 'sr', None), valid)
        if valid is not None and not self._keeps_padding: out = torch.where(valid.mask, out, xb)  # padding as it came
        if not bool(on.all()): out = torch.where(on[:, None, None], out, xb)
        return retain_type(out[0] if x.ndim == 2 else out, old=x)

def _valid(x, lengths)->_Valid|None:
    "The real samples of each item of a padded batch `x` `[B,C,N]` with `lengths` `[B]`; None when it has none"
    if lengths is None: return None
    ls = torch.as_tensor(lengths, device=x.device)
    if ls.shape != (x.shape[0],) or ls.is_floating_point() or (ls < 1).any() or (ls > x.shape[-1]).any():
        raise ValueError(f"`lengths` must hold {x.shape[0]} integers in 1..{x.shape[-1]}, one per item ({lengths!r} "
                         "given)")
    return _Valid((torch.arange(x.shape[-1], device=x.device) < ls[:, None])[:, None, :], ls.double()[:, None, None])

class AddNoise(_WaveAug):
    """Add noise at an SNR drawn per item from `snr_db`, measured against the item's own rms (silent items stay
    silent): white or pink noise, or with `noise` a recording from a `NoiseClips` (a clip per item, cropped at a random
    offset or looped)"""
    order, _keeps_padding = 4, True  # its noise is zero outside each item's samples
    draw_keys = ('snr_db', 'clip', 'offset', 'apply')  # `[B]` each; `offset` in [0,1) of the clip's free length
    @delegates(BatchRandTransform.__init__)
    def __init__(self, snr_db=(5., 30.), # SNR in dB: a number, or a (low, high) range drawn uniformly per item
                 color:str='white', # 'white' or 'pink' (when `noise` is None)
                 noise:NoiseClips|None=None, # recorded noise: `NoiseClips(folder, sr=...)` at the audio's rate
                 **kwargs):
        super().__init__(**kwargs)
        check_choice('color', color, _COLORS)
        if noise is not None and not isinstance(noise, NoiseClips):
            raise ValueError("`noise` must be a NoiseClips (e.g. NoiseClips('path/to/ESC-50', sr=16000)) or None "
                             f"({noise!r} given)")
        self.snr_db, self.color, self.noise = check_range('snr_db', snr_db), color, noise
    def _recorded(self, x, sr, valid):
        "`[B,1,N]` noise from the clips, unit rms over each item's samples"
        nc, (B, N) = self.noise, (x.shape[0], x.shape[-1])
        if sr is not None and sr != nc.sr:
            raise ValueError(f"AddNoise: the noise clips are at sr={nc.sr} Hz but the audio is at sr={sr} Hz: "
                             f"load them with NoiseClips(..., sr={sr})")
        idx = self._pinned(x, 'clip', (B,), torch.long)
        if idx is None: idx = (self._rand(x, B) * len(nc)).long().clamp(max=len(nc) - 1)
        u = self._uniform(x, 'offset', (0., 1.))
        lengths = valid.n.flatten().long() if valid is not None else torch.full((B,), N, device=x.device)
        return nc.take(idx, lengths, u, N)[:, None, :]  # zero outside each item's samples
    def augment(self, x, sr, valid=None):
        snr = self._uniform(x, 'snr_db', self.snr_db).double()[:, None, None]
        if self.noise is None:
            n = colored_noise(x.shape, self.color, self._gen(x.device), x.device)
            if valid is not None: n = torch.where(valid.mask, n, 0.)
        else: n = self._recorded(x, sr, valid)
        # float64 rms and scale: the SNR is exact up to float32 rounding (about 1e-7 dB)
        n_samples = x.shape[-1] * n.shape[-2] if valid is None else valid.n * n.shape[-2]
        rms_n = (_energy(n) / n_samples).sqrt()  # 0 outside
        scale = _rms(x, valid) * 10 ** (-snr / 20) / rms_n.clamp(min=1e-300)  # noise rms: item rms / 10^(snr/20)
        return torch.addcmul(x, n, scale.float())

class BurstNoise(_WaveAug):
    """Add `n_bursts` short noise bursts per item at random positions, each up to `max_len_s` long, at an SNR relative
    to the item's rms"""
    order = 4.5
    draw_keys = ('start', 'width', 'snr_db', 'apply')  # `[B,n]`, `[B,n]` (samples), `[B]`, `[B]`
    @delegates(BatchRandTransform.__init__)
    def __init__(self, n_bursts:int=2, # bursts per item
                 max_len_s:float=0.1, # longest burst (s); lengths are U{1..max_len} samples
                 snr_db=(0., 10.), # level of the bursts against the item's rms (dB): a number or a (low, high) range
                 color:str='white', # 'white' or 'pink'
                 **kwargs):
        super().__init__(**kwargs)
        check_choice('color', color, _COLORS)
        self.n_bursts, self.max_len_s = check_int('n_bursts', n_bursts, lo=1), check_positive('max_len_s', max_len_s)
        self.snr_db, self.color = check_range('snr_db', snr_db), color
    def augment(self, x, sr, valid=None):
        if sr is None: raise ValueError("BurstNoise needs the audio's sample rate: give it an AudioTensor with `sr`")
        B, N = x.shape[0], x.shape[-1]
        n = valid.n.flatten().long() if valid is not None else torch.full((B,), N, device=x.device)
        n = n[:, None]  # `[B,1]` samples per item
        ml = max(1, min(N, int(round(self.max_len_s * sr))))
        w = self._pinned(x, 'width', (B, self.n_bursts), torch.long)
        if w is None: w = torch.minimum(1 + (self._rand(x, B, self.n_bursts) * ml).long().clamp(max=ml - 1), n)
        s = self._pinned(x, 'start', (B, self.n_bursts), torch.long)
        if s is None: s = torch.minimum((self._rand(x, B, self.n_bursts) * (n - w + 1)).long(), (n - w).clamp(min=0))
        snr = self._uniform(x, 'snr_db', self.snr_db)[:, None, None]
        mask = span_mask(N, s, w)[:, None, :].to(x.dtype)
        return x + mask * self._noise(x, self.color) * _rms(x, valid) * 10 ** (-snr / 20)

class BandStop(_WaveAug):
    """Zero one random frequency band per item in the FFT of the whole clip: width U(`min_width_hz`, `max_width_hz`)
    inside [`min_hz`, `max_hz`]"""
    order = 2
    draw_keys = ('low_hz', 'width_hz', 'apply')  # `[B]` each
    @delegates(BatchRandTransform.__init__)
    def __init__(self, min_hz:float=50., # lowest frequency the band may start at (Hz)
                 max_hz:float|None=None, # highest frequency the band may reach (Hz), `None`: sr/2
                 max_width_hz:float=1000., # widest band (Hz)
                 min_width_hz:float=100., # narrowest band (Hz)
                 **kwargs):
        super().__init__(**kwargs)
        min_hz = check_number('min_hz', min_hz, lo=0)
        if max_hz is not None and check_positive('max_hz', max_hz) <= min_hz:
            raise ValueError(f"`max_hz` must be above min_hz={min_hz} ({max_hz!r} given)")
        self.max_width_hz = check_positive('max_width_hz', max_width_hz)
        self.min_hz, self.max_hz = min_hz, max_hz
        self.min_width_hz = check_number('min_width_hz', min_width_hz, 0, self.max_width_hz)
    def band(self, x, sr):
        "`[B]` low edge and width (Hz) of each item's band"
        hi = min(self.max_hz or sr / 2, sr / 2)
        if hi <= self.min_hz:
            raise ValueError(f"BandStop: min_hz={self.min_hz} is not below the band's top {hi} Hz (sr={sr})")
        w = self._uniform(x, 'width_hz', (self.min_width_hz, self.max_width_hz)).clamp(max=hi - self.min_hz)
        lo = self._pinned(x, 'low_hz', (x.shape[0],), torch.float32)
        if lo is None: lo = self.min_hz + self._rand(x, x.shape[0]) * (hi - self.min_hz - w)
        return lo, w
    def augment(self, x, sr, valid=None):
        if sr is None: raise ValueError("BandStop needs the audio's sample rate: give it an AudioTensor with `sr`")
        lo, w = self.band(x, sr)
        f = torch.fft.rfftfreq(x.shape[-1], 1 / sr, device=x.device)
        keep = ~((f >= lo[:, None]) & (f <= (lo + w)[:, None]))  # `[B,F]`
        return torch.fft.irfft(torch.fft.rfft(x) * keep[:, None, :], n=x.shape[-1])

class Alias(_WaveAug):
    """Downsample each item to a rate U(`min_sr`, `max_sr`) without an anti-alias filter and hold each sample back up:
    content above the new Nyquist folds down"""
    order = 2.5
    draw_keys = ('sr', 'apply')  # `[B]` each; `sr` in Hz
    @delegates(BatchRandTransform.__init__)
    def __init__(self, min_sr:float=4000., # lowest rate it is decimated to (Hz)
                 max_sr:float=8000., # highest rate (Hz); must stay below the audio's rate
                 **kwargs):
        super().__init__(**kwargs)
        self.min_sr, self.max_sr = check_positive('min_sr', min_sr), check_positive('max_sr', max_sr)
        if min_sr > max_sr: raise ValueError(f"`min_sr` must not exceed max_sr={max_sr} ({min_sr!r} given)")
    def augment(self, x, sr, valid=None):
        if sr is None: raise ValueError("Alias needs the audio's sample rate: give it an AudioTensor with `sr`")
        if self.max_sr > sr: raise ValueError(f"Alias: max_sr={self.max_sr} must not exceed the audio's sr={sr} Hz")
        B, C, N = x.shape
        r = (self._uniform(x, 'sr', (self.min_sr, self.max_sr)) / sr).double()[:, None]  # new/old rate, `[B,1]`
        n = torch.arange(N, device=x.device, dtype=torch.float64)
        # output sample n holds the last low-rate sample k = ⌊n r⌋, taken at the original sample ⌊k / r⌋
        # (no interpolation, no filter)
        idx = (torch.floor(torch.floor(n * r + 1e-9) / r + 1e-9)).long().clamp(0, N - 1)
        return x.gather(-1, idx[:, None, :].expand(B, C, N))

class Distortion(_WaveAug):
    """Soft clipping: `tanh(g x / peak)` with a drive g = 10^(gain_db/20) drawn per item, rescaled to the item's
    original peak"""
    order = 3
    draw_keys = ('gain_db', 'apply')  # `[B]` each
    @delegates(BatchRandTransform.__init__)
    def __init__(self, gain_db=(0., 20.), # drive in dB: a number or a (low, high) range; 0 dB already bends a little
                 rescale:bool=True, # back to the item's peak; False leaves `tanh(g x / peak)`, inside ±tanh(g)
                 **kwargs):
        super().__init__(**kwargs)
        self.gain_db, self.rescale = check_range('gain_db', gain_db, lo=-60., hi=60.), bool(rescale)
    def augment(self, x, sr, valid=None):
        g = 10 ** (self._uniform(x, 'gain_db', self.gain_db)[:, None, None] / 20)
        peak = x.abs().amax((-2, -1), keepdim=True)
        y = torch.tanh(g * x / peak.clamp(min=1e-12))  # a silent item (peak 0) stays 0
        return y / torch.tanh(g) * peak if self.rescale else y
