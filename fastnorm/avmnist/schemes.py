"""The AVMNIST audio recipe's degradation schemes as presets built from fastnorm's batch transforms.

A `Scheme` runs its waveform transforms (`AddNoise`, `Alias`, `Distortion`) on a padded audio batch, then its
spectrogram transforms (`FreqMask`, `TimeMask`, `KeepBands`) on the batch's spectrograms once each clip's frames fill
the image width, in the order the scheme lists them. Every draw comes from one CPU `torch.Generator` that `reseed`
sets, so a batch's result is a function of its seed (and the same on any device). Masked rows and columns take each
item's dB floor: white in an image."""
from __future__ import annotations
import math
import numpy as np, torch
from fastai.data.transforms import DisplayedTransform
from fastai.torch_core import retain_type
from ..audio import AudioTensor
from ..checks import check_choice
from ..spec import SpecConfig, TensorSpec, mel_frequencies
from ..augment import FreqMask, TimeMask, apply_masks
from ..noise import NoiseClips
from ..waveaug import AddNoise, Alias, Distortion
from .render import specgram_db, frame_counts, frame_range, resize_frames, resize_rows, db_to_level, level_to_image

__all__ = ['SCHEMES', 'NOISE_COLORS', 'KeepBands', 'Scheme', 'scheme_image', 'show_schemes']

# name -> parameters. snr_db: noise at this SNR (dB); alias: down by this factor and back up (sample and hold);
# tanh_drive: x -> tanh(drive · x / max|x|); freq_masks/time_masks: (n, fraction): n masks, each exactly this fraction
# of the frequency bins / of the clip's frames, at random places; keep_bands: only these bands (Hz) are kept.
SCHEMES = {
    'clean': dict(),
    'extreme_noise': dict(snr_db=0., time_masks=(2, .10)),
    'multi_band': dict(freq_masks=(3, .20), keep_bands=((50., 1000.), (2000., 3500.))),
    'burst_noise': dict(snr_db=3., time_masks=(4, .15)),
    'aliased': dict(alias=4, freq_masks=(1, .30)),
    'distorted': dict(snr_db=5., tanh_drive=2.),
}
NOISE_COLORS = ('white', 'pink')  # the coloured noise a scheme mixes in when it has no recorded noise

def _row_freqs(cfg:SpecConfig, n_rows:int):
    "Centre frequency (Hz) of each row of a spectrogram made with `cfg`: its mel bands, or `n_rows` rows from 0 to sr/2"
    return torch.tensor(mel_frequencies(cfg) if cfg.n_mels else np.linspace(0, cfg.sr / 2, n_rows), dtype=torch.float64)

class KeepBands(DisplayedTransform):
    "Spectrogram transform: rows centred outside every band of `bands` (Hz) are set to `mask_value`. `x`: `[B,C,F,T]`"
    order = 103  # after FreqMask (101) and TimeMask (102)
    def __init__(self, bands=((50., 1000.), (2000., 3500.)), # (low, high) pairs in Hz, inclusive
                 mask_value:float=0., # what the other rows become
                ):
        ok = isinstance(bands, (tuple, list)) and len(bands) > 0 and all(
            isinstance(b, (tuple, list)) and len(b) == 2 and 0 <= b[0] < b[1] for b in bands)
        if not ok:
            raise ValueError(f"`bands` must be a non-empty list of (low, high) Hz, 0 <= low < high ({bands!r} given)")
        super().__init__()
        self.bands, self.mask_value = tuple((float(a), float(b)) for a, b in bands), float(mask_value)
    def encodes(self, x:TensorSpec):
        cfg = getattr(x, 'cfg', None)
        if cfg is None: raise ValueError("KeepBands needs the spectrogram's settings: give it a TensorSpec with `cfg`")
        f = _row_freqs(cfg, x.shape[-2]).to(x.device)
        keep = torch.zeros_like(f, dtype=torch.bool)
        for lo, hi in self.bands: keep |= (f >= lo) & (f <= hi)
        return apply_masks(x, freq=(~keep)[None].expand(x.shape[0], -1), mask_value=self.mask_value)

class Scheme:
    """One of `SCHEMES`: `wave` degrades a padded audio batch, `spec` the batch's spectrograms (once each clip's frames
    fill the width). All randomness comes from one CPU generator: `reseed(s)` before a batch makes the batch's draws a
    function of `s`, on any device."""
    def __init__(self, name:str, # a key of `SCHEMES`
                 sr:int, # the audio's sample rate (Hz)
                 noise:NoiseClips|None=None, # recorded noise; None: coloured noise of `color`
                 color:str='pink', # 'pink' or 'white', when `noise` is None
                 seed:int=0, # the generator's first seed
                ):
        check_choice('scheme', name, tuple(SCHEMES))
        check_choice('color', color, NOISE_COLORS)
        self.name, self.params, self.sr, self.noise, self.color = name, SCHEMES[name], int(sr), noise, color
        self.generator, self._pins, self._spec = torch.Generator().manual_seed(seed), {}, {}
        p, g = self.params, self.generator
        self.wave_tfms = []
        if 'alias' in p:
            self.wave_tfms.append(Alias(min_sr=self.sr / p['alias'], max_sr=self.sr / p['alias'], generator=g))
        if 'snr_db' in p:
            pins = lambda x: self._pins  # the noise clips the caller assigns to this batch's items, if any
            self.wave_tfms.append(AddNoise(p['snr_db'], color=color, noise=noise, generator=g, draw=pins))
        if 'tanh_drive' in p:
            self.wave_tfms.append(Distortion(20 * math.log10(p['tanh_drive']), rescale=False, generator=g))

    def __repr__(self): return f"Scheme({self.name!r}, sr={self.sr}, noise={self.noise!r}, color={self.color!r})"
    def reseed(self, seed:int): self.generator.manual_seed(int(seed))

    def spec_tfms(self, n_freq:int, n_frames:int)->list:
        "The spectrogram transforms for batches `[B,C,n_freq,n_frames]`: mask widths are exact fractions of the sizes"
        key = (n_freq, n_frames)
        if key not in self._spec:
            p, g, tfms = self.params, self.generator, []
            if 'freq_masks' in p:
                n, frac = p['freq_masks']
                w = max(1, round(frac * n_freq))
                tfms.append(FreqMask(w, n_freq_mask=n, generator=g, draw={'width': w}))
            if 'time_masks' in p:
                n, frac = p['time_masks']
                w = max(1, round(frac * n_frames))
                tfms.append(TimeMask(w, n_time_mask=n, generator=g, draw={'width': w}))
            if 'keep_bands' in p: tfms.append(KeepBands(p['keep_bands']))
            self._spec[key] = tfms
        return self._spec[key]

    def wave(self, x:AudioTensor, # `[B,C,N]`, with `lengths` when padded
             clips:torch.Tensor|None=None, # `[B]` noise clip of each item (indices into `noise.files`); None: drawn
            )->AudioTensor:
        "The scheme's waveform transforms, in its order"
        self._pins = {} if clips is None else {'clip': clips}
        for t in self.wave_tfms: x = t(x, split_idx=0)
        return x

    def spec(self, s:TensorSpec, # `[B,C,F,T]` dB, every column real
             floor:torch.Tensor|float|None=None, # `[B]` what masked cells become (default: each item's minimum)
            )->TensorSpec:
        "The scheme's spectrogram transforms; masked cells take each item's `floor`"
        tfms = self.spec_tfms(s.shape[-2], s.shape[-1])
        if not tfms: return s
        if isinstance(floor, (int, float)) and floor == 0:  # already 0 at the floor: no shift
            for t in tfms: s = t(s, split_idx=0)
            return s
        floor = (s.as_subclass(torch.Tensor).amin((1, 2, 3), keepdim=True) if floor is None
                 else torch.as_tensor(floor, device=s.device).float().reshape(-1, 1, 1, 1))
        z = retain_type(s.as_subclass(torch.Tensor) - floor, old=s)
        for t in tfms: z = t(z, split_idx=0)
        return retain_type(z.as_subclass(torch.Tensor) + floor, old=s)

def scheme_image(x:AudioTensor, # `[B,C,N]` audio (with `lengths` when padded)
                 scheme:Scheme, # what to do to it
                 size=(112, 112), # (height, width) of the images
                 clips:torch.Tensor|None=None, # `[B]` noise clip of each item; None: drawn
                 n_fft:int=256, hop:int=128, # the recipe's NFFT and NFFT - noverlap
                )->tuple:
    """The AVMNIST recipe on a batch: `scheme.wave`, matplotlib-style dB spectrogram, frames to width and bins to
    height, grey levels, `scheme.spec` on them, `uint8` `gray_r` image `[B,H,W]`; also returns the degraded audio"""
    lengths = getattr(x, 'lengths', None)
    B, N = x.shape[0], x.shape[-1]
    lengths = torch.full((B,), N) if lengths is None else torch.as_tensor(lengths)
    y = scheme.wave(x, clips)
    y1 = y if y.shape[1] == 1 else y.mean(1, keepdim=True)  # mono: the recipe's images have one channel
    db = specgram_db(y1, scheme.sr, n_fft, hop, top_db=None)
    nf = frame_counts(lengths, n_fft, hop).to(db.device)
    lo, hi = frame_range(db, nf, top_db=120.)  # matplotlib's colour limits: the item's own cells (at most 120 dB apart)
    (F, T), (H, W) = db.shape[-2:], size
    if H * F * T + H * T * W < F * T * W + H * F * W: db = resize_frames(resize_rows(db, H), nf, W)  # the cheaper order
    else: db = resize_rows(resize_frames(db, nf, W), H)
    level = db_to_level(db, lo, hi)  # 0: white (quiet) ... 255: black (loud)
    cfg = SpecConfig(sr=scheme.sr, n_fft=n_fft, hop_length=hop, n_mels=None, center=False)
    level = scheme.spec(TensorSpec(level, cfg=cfg), floor=0.)  # masks: white
    return level_to_image(level)[:, 0], y

def show_schemes(x:AudioTensor, # one clip `[C,N]` (or `[1,C,N]`)
                 noise:NoiseClips|None=None, # recorded noise for the noisy schemes; None: pink noise
                 names=None, # schemes to show (default: all of `SCHEMES`)
                 seed:int=0, # the generator's seed: the figure is a function of it
                 size=(112, 112), # image size
                 figsize=None,
                ):
    "A figure with one row per scheme: the degraded waveform, and its image as the export writes it"
    import matplotlib.pyplot as plt
    names = list(SCHEMES) if names is None else list(names)
    xb = x.as_subclass(torch.Tensor)[None] if x.ndim == 2 else x.as_subclass(torch.Tensor)  # one clip: no `lengths`
    fig, axs = plt.subplots(len(names), 2, figsize=figsize or (8, 1.9 * len(names)), squeeze=False,
                            gridspec_kw=dict(width_ratios=(2.6, 1)))
    for (a, b), name in zip(axs, names):
        sc = Scheme(name, x.sr, noise=noise, seed=seed)
        img, y = scheme_image(AudioTensor(xb, sr=x.sr), sc, size)
        AudioTensor(y[0], sr=x.sr).show(ctx=a)
        a.set_title(name, loc='left', fontsize=9)
        a.set_xlabel('')
        b.imshow(img[0].cpu().numpy(), cmap='gray', vmin=0, vmax=255)
        b.set_xticks([])
        b.set_yticks([])
    axs[-1][0].set_xlabel('time (s)')
    fig.tight_layout()
    return fig
