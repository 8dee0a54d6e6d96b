"Spectrograms: the `TensorSpec` type, its settings `SpecConfig`, and the batch transform `MelSpec` with named presets."
from __future__ import annotations
import dataclasses, hashlib, json, math
from dataclasses import dataclass, asdict
import numpy as np, torch
from fastai.torch_core import TensorImageBase
from fastai.data.transforms import DisplayedTransform
from .audio import AudioTensor, KeepMeta
from .dsp import hz_to_mel, mel_to_hz, mel_filterbank, spectrogram, power_to_db
from .checks import check_choice, check_int, check_number

__all__ = ['SpecConfig', 'SPEC_PRESETS', 'TensorSpec', 'MelSpec', 'mel_frequencies', 'spec_config']

@dataclass(frozen=True)
class SpecConfig:
    "Every setting that decides what a spectrogram's numbers mean: kept on each `TensorSpec`, in cache keys and stats"
    sr:int = 16000            # sample rate of the input audio (Hz)
    n_fft:int = 512           # FFT size (samples)
    hop_length:int = 256      # hop between frames (samples)
    win_length:int|None = None  # window length, `None` means `n_fft` (periodic Hann)
    n_mels:int|None = 64      # mel bins; `None` gives the linear STFT bins (n_fft//2+1)
    f_min:float = 0.          # lowest mel filter edge (Hz)
    f_max:float|None = None   # highest mel filter edge (Hz); `None` means sr/2
    power:float = 2.          # 2: power, 1: magnitude
    db:bool = True            # log scale in dB (10 log10 of power, ref 1, amin 1e-10)
    top_db:float|None = None  # per-item floor at max - top_db (dB only)
    center:bool = True        # centre frames, padding the ends by reflection
    mel_scale:str = 'slaney'  # 'slaney' (librosa's default) or 'htk' (torchaudio's default)
    mel_norm:str|None = 'slaney'  # 'slaney': filters of equal area (librosa's default); None: peak 1 (torchaudio's)

    def __post_init__(self):
        # a whole float passes `check_int`: stored as the int it returns, frame counts and cache keys stay ints
        for k in ('sr', 'n_fft', 'hop_length', 'win_length', 'n_mels'):
            v = getattr(self, k)
            if k in ('sr', 'n_fft', 'hop_length') or v is not None: object.__setattr__(self, k, check_int(k, v, lo=1))
        check_number('f_min', self.f_min, lo=0)
        if self.f_max is not None: check_number('f_max', self.f_max, lo=self.f_min, hi=self.sr/2, lo_open=True)
        if self.top_db is not None: check_number('top_db', self.top_db, lo=0)
        check_choice('power', self.power, (1., 2.))
        check_choice('mel_scale', self.mel_scale, ('slaney', 'htk'))
        check_choice('mel_norm', self.mel_norm, ('slaney', None))

    @property
    def n_freq(self): return self.n_mels if self.n_mels else self.n_fft//2 + 1
    @property
    def fmax(self): return self.f_max if self.f_max is not None else self.sr/2
    def n_frames(self, n_samples:int)->int:
        "Frames for a clip of `n_samples` (clips shorter than `n_fft` are zero-padded to it)"
        n = max(n_samples, self.n_fft)
        return 1 + n // self.hop_length if self.center else 1 + (n - self.n_fft) // self.hop_length
    def to_dict(self): return asdict(self)
    def key(self)->str:
        "A short stable hash of the settings"
        return hashlib.sha1(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    def replace(self, **kw): return dataclasses.replace(self, **kw)

    @staticmethod
    def from_preset(name:str)->SpecConfig:
        "The settings of one of `SPEC_PRESETS` ('quick', 'esc50', 'paper'); an unknown name is an error listing them"
        if name not in SPEC_PRESETS:
            raise ValueError(f"Unknown spectrogram preset {name!r}: choose from {sorted(SPEC_PRESETS)}")
        return SPEC_PRESETS[name]

SPEC_PRESETS = {
    # small and fast for a CPU: 16 kHz, 64 mels
    'quick': SpecConfig(sr=16000, n_fft=512, hop_length=256, n_mels=64),
    # ESC-50 at its own rate: 44.1 kHz, 128 mels -> [1,128,431] for a 5 s clip
    'esc50': SpecConfig(sr=44100, n_fft=2048, hop_length=512, n_mels=128),
    # the published post's setup: 16 kHz, a 201-bin dB spectrogram (n_fft 400, hop 200)
    'paper': SpecConfig(sr=16000, n_fft=400, hop_length=200, n_mels=None),
}

def mel_frequencies(cfg:SpecConfig)->np.ndarray:
    "Centre frequency (Hz) of each row of a spectrogram made with `cfg`"
    if not cfg.n_mels: return np.linspace(0, cfg.sr/2, cfg.n_freq)
    mels = np.linspace(hz_to_mel(cfg.f_min, cfg.mel_scale), hz_to_mel(cfg.fmax, cfg.mel_scale), cfg.n_mels + 2)
    return mel_to_hz(mels, cfg.mel_scale)[1:-1]

class TensorSpec(KeepMeta, TensorImageBase):
    "Spectrogram `[C,F,T]` (a batch: `[B,C,F,T]`) carrying its `SpecConfig` as `cfg`; image augmentations skip it"
    def show(self, ctx=None, figsize=(5,3), title=None, cmap='magma', colorbar=True, **kwargs):
        "Draw with a time axis (s), a frequency axis (Hz) and a colorbar"
        import matplotlib.pyplot as plt
        cfg = getattr(self, 'cfg', None)
        x = self.detach().cpu().float()
        while x.ndim > 2: x = x[0]
        if ctx is None: _, ctx = plt.subplots(figsize=figsize)
        nf, nt = x.shape
        dur = nt * cfg.hop_length / cfg.sr if cfg else nt
        im = ctx.imshow(x.numpy(), origin='lower', aspect='auto', cmap=cmap, extent=(0, dur, -.5, nf - .5), **kwargs)
        ctx.set_xlabel('time (s)' if cfg else 'frame')
        if cfg:
            freqs = mel_frequencies(cfg)
            ticks = np.unique(np.linspace(0, nf - 1, min(nf, 6)).round().astype(int))
            ctx.set_yticks(ticks)
            ctx.set_yticklabels([f'{freqs[i]:.0f}' if freqs[i] < 1000 else f'{freqs[i]/1000:.1f}k' for i in ticks])
            ctx.set_ylabel('Hz')
        else: ctx.set_ylabel('bin')
        if colorbar: ctx.figure.colorbar(im, ax=ctx, label='dB' if (cfg is None or cfg.db) else 'power')
        if title is not None: ctx.set_title(title)
        return ctx

class MelSpec(DisplayedTransform):
    "Batch transform: AudioTensor `[B,C,N]` (or `[C,N]`) to a log-mel `TensorSpec` `[B,C,F,T]` on the batch's device"
    order = 5  # after AudioNormalize (1), before normalization (99) and SpecAugment
    def __init__(self, sr:int=16000, # sample rate the audio must have (Hz)
                 n_fft:int=512, # FFT size
                 hop_length:int|None=None, # hop (samples), `None`: n_fft//2
                 n_mels:int|None=64, # mel bins, `None` for a linear STFT spectrogram
                 f_min:float=0., # lowest mel edge (Hz)
                 f_max:float|None=None, # highest mel edge (Hz), `None`: sr/2
                 power:float=2., # 2: power, 1: magnitude
                 db:bool=True, # convert to dB
                 top_db:float|None=None, # per-item dynamic range floor (dB)
                 win_length:int|None=None, # window length, `None`: n_fft
                 mel_scale:str='slaney', # 'slaney' (librosa's default) or 'htk'
                 mel_norm:str|None='slaney', # 'slaney' (equal-area filters, librosa's default) or None
                 cfg:SpecConfig|None=None, # give all settings at once instead
                ):
        super().__init__()
        if cfg is None:
            cfg = SpecConfig(sr=sr, n_fft=n_fft, hop_length=hop_length or n_fft//2, n_mels=n_mels, f_min=f_min,
                             f_max=f_max, power=power, db=db, top_db=top_db, win_length=win_length,
                             mel_scale=mel_scale, mel_norm=mel_norm)
        self.cfg = cfg

    @classmethod
    def from_preset(cls, name:str='quick', **overrides):
        "A `MelSpec` from one of `SPEC_PRESETS` ('quick', 'esc50', 'paper'), with optional overrides"
        return cls(cfg=SpecConfig.from_preset(name).replace(**overrides))

    def mel_fb(self, device=None)->torch.Tensor|None:
        "The mel filterbank `[n_fft//2+1, n_mels]` of `cfg` on `device` (`None` for a linear spectrogram)"
        c = self.cfg
        if not c.n_mels: return None
        return mel_filterbank(c.n_fft//2 + 1, c.f_min, c.fmax, c.n_mels, c.sr, c.mel_norm, c.mel_scale, device)

    def encodes(self, x:AudioTensor)->TensorSpec:
        c, sr = self.cfg, getattr(x, 'sr', None)
        if sr is not None and sr != c.sr:
            raise ValueError(f"MelSpec expects audio at sr={c.sr} Hz but got sr={sr} Hz: "
                             f"resample it (AudioBlock(sr={c.sr})) or set MelSpec(sr={sr})")
        xt = torch.Tensor(x).float() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float32)
        if xt.shape[-1] < c.n_fft:  # short clips: zero-padded to one window
            xt = torch.nn.functional.pad(xt, (0, c.n_fft - xt.shape[-1]))
        s = spectrogram(xt, c.n_fft, c.hop_length, c.win_length, c.power, c.center, mel_fb=self.mel_fb(xt.device))
        if c.db: s = power_to_db(s, c.power, top_db=c.top_db)
        return TensorSpec(s, cfg=c)

def spec_config(spec='quick', # a preset name (see `SPEC_PRESETS`), a `SpecConfig` or a `MelSpec`
                sr:int|None=None, # overrides the config's sample rate
               )->SpecConfig:
    "A `SpecConfig` from a preset name, a `SpecConfig` or a `MelSpec`"
    if isinstance(spec, MelSpec): cfg = spec.cfg
    elif isinstance(spec, SpecConfig): cfg = spec
    elif isinstance(spec, str): cfg = SpecConfig.from_preset(spec)
    else: raise TypeError(f"`spec` must be a preset name, a SpecConfig or a MelSpec ({type(spec).__name__} given)")
    return cfg if sr is None or sr == cfg.sr else cfg.replace(sr=sr)
