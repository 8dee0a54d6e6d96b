"""`DeviceAugment`: a train-only batch augmentation that simulates unseen recording devices on dB spectrograms
`[B,C,F,T]`. It draws a random frequency response per item (tilt, smooth EQ bumps, a band limit) and a jitter of the mel
filterbank's top frequency. The pure functions (`device_gains`, `band_limit_gains`, `fmax_warp`) are deterministic
given their parameters; the transform draws those parameters per item in one vectorized call."""
from __future__ import annotations
import math
from functools import lru_cache
import torch
from fastcore.meta import delegates
from fastai.torch_core import retain_type
from .batchrand import BatchRandTransform
from .checks import check_frac, check_int, check_number, check_range, check_batch4d
from .dsp import hz_to_mel
from .spec import TensorSpec, SpecConfig, mel_frequencies

__all__ = ['device_gains', 'band_limit_gains', 'fmax_warp', 'DeviceAugment']

F_LOW = 20.  # Hz: a tilt treats lower bin centres (a linear spectrogram's DC bin) as this, so log2 stays finite

@lru_cache(maxsize=16)
def _centres(cfg:SpecConfig, device)->torch.Tensor:
    "`[F]` centre frequencies (Hz, float32) of `cfg`'s rows on `device`; one copy per config and device"
    return torch.as_tensor(mel_frequencies(cfg), dtype=torch.float32).to(device)

def device_gains(freqs:torch.Tensor, # `[F]` centre frequency of each row (Hz)
                 tilt:torch.Tensor, # `[B]` slope (dB per octave) around `f_ref`
                 eq_center:torch.Tensor, # `[B,n]` bump centres, as a position on the rows: 0 the first, 1 the last
                 eq_width:torch.Tensor, # `[B,n]` bump widths (standard deviation), in the same units as `eq_center`
                 eq_gain:torch.Tensor, # `[B,n]` bump gains at their centres (dB)
                 f_ref:float=1000., # the tilt's pivot (Hz): a row at `f_ref` gets no tilt
                )->torch.Tensor:
    "`[B,F]` gains (dB): `tilt * log2(f / f_ref)` plus a sum of Gaussian bumps along the rows"
    F = freqs.shape[0]
    octaves = torch.log2(freqs.clamp_min(F_LOW) / f_ref)
    g = tilt[:, None] * octaves
    if eq_gain.shape[-1] == 0: return g
    pos = torch.arange(F, dtype=freqs.dtype, device=freqs.device) / max(F - 1, 1)
    z = (pos - eq_center[..., None]) / eq_width[..., None]  # [B,n,F]
    return g + (eq_gain[..., None] * torch.exp(-0.5 * z * z)).sum(-2)

def band_limit_gains(freqs:torch.Tensor, # `[F]` centre frequency of each row (Hz)
                     cutoff:torch.Tensor, # `[B]` low-pass cutoff (Hz); `inf` for no band limit
                     rolloff_db:float=48., # attenuation (dB) per octave above the cutoff
                    )->torch.Tensor:
    "`[B,F]` gains (dB): 0 up to the cutoff, then `-rolloff_db * log2(f / cutoff)`"
    octaves = torch.log2(freqs.clamp_min(F_LOW)[None] / cutoff[:, None]).clamp_min(0)
    return -rolloff_db * octaves

def _mel_t(f:torch.Tensor, mel_scale:str)->torch.Tensor:
    "`hz_to_mel` on a tensor, on its device (`dsp.hz_to_mel` is NumPy)"
    if mel_scale == 'htk': return 2595. * torch.log10(1. + f / 700.)
    lin, logstep = 200. / 3, math.log(6.4) / 27.
    return torch.where(f >= 1000., 1000. / lin + torch.log(f.clamp_min(1e-10) / 1000.) / logstep, f / lin)

def _warp_sources(cfg:SpecConfig, scale:torch.Tensor)->torch.Tensor:
    """`[B,F]` fractional source row of each output row when the top frequency becomes `scale * f_max`: mel rows are
    equally spaced in mel between f_min and f_max (`(k+1) r - 1`, r the ratio of the mel spans), linear rows in Hz"""
    F = cfg.n_freq
    k = torch.arange(F, dtype=torch.float32, device=scale.device)
    if not cfg.n_mels: return k * scale[:, None]
    lo, hi = float(hz_to_mel(cfg.f_min, cfg.mel_scale)), float(hz_to_mel(cfg.fmax, cfg.mel_scale))
    r = (_mel_t(cfg.fmax * scale.float(), cfg.mel_scale) - lo) / (hi - lo)
    r = torch.where(scale == 1, torch.ones_like(r), r)  # float32 rounding must not move an unwarped item
    return (k + 1) * r[:, None] - 1

def fmax_warp(x:torch.Tensor, # `[B,C,F,T]` spectrogram batch made with `cfg`, any device
              cfg:SpecConfig, # the settings that made `x`
              scale:torch.Tensor, # `[B]` factor on each item's top frequency `f_max` (1: unchanged)
             )->torch.Tensor:
    """Each item as if its filterbank's top frequency were `scale * f_max`: rows resampled along frequency by linear
    interpolation (two gathers and a lerp over the batch); sources beyond the last row take the last row"""
    B, C, nf, nt = x.shape
    if nf < 2: return x
    src = _warp_sources(cfg, scale.to(x.device)).clamp(0, nf - 1)
    i0 = src.floor().long().clamp(0, nf - 2)
    frac = (src - i0).to(x.dtype)[:, None, :, None]
    xt = x.as_subclass(torch.Tensor)
    out = xt.gather(-2, i0[:, None, :, None].expand(B, C, nf, nt))
    out.lerp_(xt.gather(-2, (i0 + 1)[:, None, :, None].expand(B, C, nf, nt)), frac)
    return retain_type(out, old=x)

_BATCH_HINT = "use it as a batch transform (`batch_tfms`), or add a batch dimension with `x[None]`"

class DeviceAugment(BatchRandTransform):
    """Each chosen item as if recorded by another device: a random frequency response (a tilt in dB per octave, smooth
    EQ bumps, sometimes a low-pass band limit) added in dB, after a random jitter of the mel filterbank's top frequency.
    Train only. `x`: `[B,C,F,T]` `TensorSpec` in dB (`cfg.db`: gains in dB only add on a log scale), any device, before
    normalization; other types pass through. Each effect has its probability, drawn per item among the items chosen
    with `p`; `draw=` pins `draw_keys` (a pinned effect applies as given, its probability unused)"""
    order = 50  # after MelSpec (5) and the waveform augmentations, before normalization (99): the gains are in dB
    draw_keys = ('tilt', 'eq_center', 'eq_width', 'eq_gain', 'cutoff', 'fmax_scale', 'apply')  # see `params`
    @delegates(BatchRandTransform.__init__)
    def __init__(self, p:float=0.5, # probability that an item gets a device at all
                 tilt_db:float=3., # tilt slope ~ U(-tilt_db, tilt_db) dB per octave around `f_ref`
                 p_tilt:float=1., # probability of a tilt
                 n_bumps:int=2, # EQ bumps per item: Gaussians along the rows
                 eq_db:float=6., # bump gain ~ U(-eq_db, eq_db) dB at its centre
                 eq_width:float|tuple=(0.03, 0.12), # bump std ~ U(low, high), a fraction of the rows (centre ~ U(0, 1))
                 p_eq:float=1., # probability of EQ bumps
                 p_band:float=0.25, # probability of a band limit
                 band_min_hz:float=3000., # cutoff ~ U(band_min_hz, top centre frequency); no effect at or above the top
                 band_rolloff_db:float=48., # attenuation (dB per octave) above the cutoff
                 band_floor_db:float=80., # a band limit never takes a value below the item's max minus this (dB)
                 fmax_jitter:float=0.05, # top frequency f_max times U(1 - fmax_jitter, 1 + fmax_jitter)
                 p_fmax:float=1., # probability of a top frequency jitter
                 f_ref:float=1000., # the tilt's pivot (Hz)
                 cfg:SpecConfig|None=None, # the spectrograms' settings; default: the batch's own `cfg`
                 **kwargs):
        super().__init__(p=p, **kwargs)
        for k, v in dict(p_tilt=p_tilt, p_eq=p_eq, p_band=p_band, p_fmax=p_fmax).items():
            setattr(self, k, check_frac(k, v))
        self.tilt_db, self.eq_db = check_number('tilt_db', tilt_db, lo=0), check_number('eq_db', eq_db, lo=0)
        self.n_bumps, self.eq_width = check_int('n_bumps', n_bumps), check_range('eq_width', eq_width, lo=0, hi=1)
        if self.eq_width[0] == 0: raise ValueError(f"`eq_width` must be above 0 ({eq_width!r} given)")
        self.band_min_hz = check_number('band_min_hz', band_min_hz, lo=0)
        self.band_rolloff_db = check_number('band_rolloff_db', band_rolloff_db, lo=0, lo_open=True)
        self.band_floor_db = check_number('band_floor_db', band_floor_db, lo=0, lo_open=True)
        self.fmax_jitter = check_number('fmax_jitter', fmax_jitter, lo=0, hi=1, hi_open=True)
        self.f_ref = check_number('f_ref', f_ref, lo=0, lo_open=True)
        if cfg is not None and not isinstance(cfg, SpecConfig):
            raise ValueError(f"`cfg` must be a SpecConfig or None ({type(cfg).__name__} given)")
        self.cfg = cfg

    def _cfg(self, x)->SpecConfig:
        "The settings of `x`: `cfg` if given, else the batch's own; checked to be dB with `x`'s rows"
        cfg = self.cfg if self.cfg is not None else getattr(x, 'cfg', None)
        if cfg is None:
            raise ValueError("DeviceAugment needs the spectrograms' settings for their bin frequencies: give "
                             "`cfg=SpecConfig(...)`, or a TensorSpec carrying its `cfg` (as MelSpec makes them)")
        if not cfg.db:
            raise ValueError("DeviceAugment adds gains in dB, so it needs dB spectrograms (cfg.db=True, "
                             "cfg.db=False given): make them with MelSpec(db=True)")
        if cfg.n_freq != x.shape[-2]:
            raise ValueError(f"DeviceAugment's cfg has {cfg.n_freq} rows but the batch has {x.shape[-2]} "
                             f"(shape {list(x.shape)}): give the cfg that made the batch")
        return cfg

    def _draw(self, x, name, shape, lo, hi, p, neutral):
        "`name` pinned, or U(lo, hi) of `shape`, kept per item with probability `p` (`neutral` elsewhere)"
        got = self._pinned(x, name, shape, torch.float32)
        if got is not None: return got
        v = lo + (hi - lo) * self._rand(x, *shape)
        if p == 1.: return v
        on = (self._rand(x, shape[0]) < p).view(-1, *[1] * (len(shape) - 1))
        return torch.where(on, v, torch.full_like(v, neutral))

    def params(self, x:torch.Tensor, # the batch `[B,C,F,T]`
               cfg:SpecConfig, # its settings
              )->dict:
        """Per-item parameters, drawn or pinned: `tilt` `[B]` dB/octave, `eq_center` `[B,n]` (0: first row, 1: last),
        `eq_width` `[B,n]` (same units), `eq_gain` `[B,n]` dB, `cutoff` `[B]` Hz (inf: none), `fmax_scale` `[B]`"""
        B, n, top = x.shape[0], self.n_bumps, float(mel_frequencies(cfg)[-1])
        j, t, e = self.fmax_jitter, self.tilt_db, self.eq_db
        return dict(tilt=self._draw(x, 'tilt', (B,), -t, t, self.p_tilt, 0.),
                    eq_center=self._draw(x, 'eq_center', (B, n), 0., 1., 1., 0.),
                    eq_width=self._draw(x, 'eq_width', (B, n), *self.eq_width, 1., 1.).clamp_min(1e-6),
                    eq_gain=self._draw(x, 'eq_gain', (B, n), -e, e, self.p_eq, 0.),
                    cutoff=self._draw(x, 'cutoff', (B,), min(self.band_min_hz, top), top, self.p_band, math.inf),
                    fmax_scale=self._draw(x, 'fmax_scale', (B,), 1 - j, 1 + j, self.p_fmax, 1.))

    def encodes(self, x:TensorSpec):
        check_batch4d(x, 'DeviceAugment', _BATCH_HINT)
        cfg, on = self._cfg(x), self._apply(x)
        xt = x.as_subclass(torch.Tensor)
        if not xt.is_floating_point(): xt = xt.float()
        d, freqs = self.params(xt, cfg), _centres(cfg, xt.device)
        y = fmax_warp(xt, cfg, d['fmax_scale'])
        g = device_gains(freqs, d['tilt'], d['eq_center'], d['eq_width'], d['eq_gain'], self.f_ref)
        base = y + g.to(xt.dtype)[:, None, :, None]  # the whole response: one `[B,1,F,1]` curve
        band = band_limit_gains(freqs, d['cutoff'], self.band_rolloff_db).to(xt.dtype)[:, None, :, None]
        floor = base.amax((1, 2, 3), keepdim=True) - self.band_floor_db
        out = torch.maximum(base + band, torch.minimum(base, floor))  # attenuated to the floor, never lifted
        return retain_type(torch.where(on[:, None, None, None], out, xt), old=x)

    def __repr__(self):
        return (f"DeviceAugment(p={self.p}, tilt_db={self.tilt_db}, p_tilt={self.p_tilt}, n_bumps={self.n_bumps}, "
                f"eq_db={self.eq_db}, eq_width={self.eq_width}, p_eq={self.p_eq}, p_band={self.p_band}, "
                f"band_min_hz={self.band_min_hz}, band_rolloff_db={self.band_rolloff_db}, "
                f"band_floor_db={self.band_floor_db}, fmax_jitter={self.fmax_jitter}, p_fmax={self.p_fmax}, "
                f"f_ref={self.f_ref})")
