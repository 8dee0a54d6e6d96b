"Spectrograms: the `TensorSpec` type, its settings `SpecConfig`, and the batch transform `MelSpec` with named presets."
from __future__ import annotations
import dataclasses, hashlib, json, math
from dataclasses import dataclass, asdict
import numpy as np, torch
import torchaudio.transforms as T
from fastai.torch_core import TensorImageBase
from fastai.data.transforms import DisplayedTransform
from .audio import AudioTensor, KeepMeta

__all__ = ['SpecConfig', 'SPEC_PRESETS', 'TensorSpec', 'MelSpec', 'AudioToSpec', 'power_to_db', 'mel_frequencies']

@dataclass(frozen=True)
class SpecConfig:
    "Every setting that decides what a spectrogram's numbers mean: kept on each `TensorSpec`, in cache keys and saved statistics"
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

    def __post_init__(self):
        for k in ('sr', 'n_fft', 'hop_length'):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or v <= 0: raise ValueError(f"`{k}` must be a positive integer ({v!r} given)")
        if self.n_mels is not None and self.n_mels <= 0: raise ValueError(f"`n_mels` must be positive or None ({self.n_mels!r} given)")
        if self.f_max is not None and not self.f_min < self.f_max <= self.sr/2:
            raise ValueError(f"`f_max` must lie in (f_min, sr/2] = ({self.f_min}, {self.sr/2}] ({self.f_max} given)")
        if self.power not in (1., 2.): raise ValueError(f"`power` must be 1 or 2 ({self.power} given)")

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

SPEC_PRESETS = {
    # small and fast for a CPU: 16 kHz, 64 mels
    'quick': SpecConfig(sr=16000, n_fft=512, hop_length=256, n_mels=64),
    # the draft normalization post's ESC-50 setup: 44.1 kHz, 128 mels -> [1,128,431] for a 5 s clip
    'esc50': SpecConfig(sr=44100, n_fft=2048, hop_length=512, n_mels=128),
    # the published post's setup: 16 kHz, a 201-bin dB spectrogram (n_fft 400, hop 200)
    'paper': SpecConfig(sr=16000, n_fft=400, hop_length=200, n_mels=None),
}

def power_to_db(x:torch.Tensor, power:float=2., amin:float=1e-10, top_db:float|None=None)->torch.Tensor:
    "`10 log10` of a power (`20 log10` of a magnitude) spectrogram `[...,C,F,T]`; `top_db` floors each item at its max - `top_db`"
    db = (20. / power) * torch.log10(x.clamp(min=amin))
    if top_db is not None:
        peak = db.flatten(-3).amax(-1) if db.ndim >= 3 else db.amax()
        while peak.ndim < db.ndim: peak = peak[..., None]
        db = torch.maximum(db, peak - top_db)
    return db

def _hz_to_mel(f):
    "Slaney mel scale (librosa's default, `htk=False`)"
    f = np.asarray(f, dtype=np.float64)
    lin, logstep, minlog = 200./3, math.log(6.4)/27., 1000.
    return np.where(f >= minlog, minlog/lin + np.log(np.maximum(f, 1e-10)/minlog)/logstep, f/lin)

def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    lin, logstep, minlog = 200./3, math.log(6.4)/27., 1000.
    return np.where(m >= minlog/lin, minlog*np.exp(logstep*(m - minlog/lin)), lin*m)

def mel_frequencies(cfg:SpecConfig)->np.ndarray:
    "Centre frequency (Hz) of each row of a spectrogram made with `cfg`"
    if not cfg.n_mels: return np.linspace(0, cfg.sr/2, cfg.n_freq)
    return _mel_to_hz(np.linspace(_hz_to_mel(cfg.f_min), _hz_to_mel(cfg.fmax), cfg.n_mels + 2))[1:-1]

class TensorSpec(KeepMeta, TensorImageBase):
    "Spectrogram `[C,F,T]` (a batch: `[B,C,F,T]`) carrying its `SpecConfig` as `cfg`; image augmentations leave it alone"
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
            ctx.set_yticks(ticks); ctx.set_yticklabels([f'{freqs[i]:.0f}' if freqs[i] < 1000 else f'{freqs[i]/1000:.1f}k' for i in ticks])
            ctx.set_ylabel('Hz')
        else: ctx.set_ylabel('bin')
        if colorbar: ctx.figure.colorbar(im, ax=ctx, label='dB' if (cfg is None or cfg.db) else 'power')
        if title is not None: ctx.set_title(title)
        return ctx

class MelSpec(DisplayedTransform):
    "Batch transform: AudioTensor `[B,C,N]` (or `[C,N]`) to a log-mel `TensorSpec` `[B,C,F,T]` on the batch's own device"
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
                 cfg:SpecConfig|None=None, # give all settings at once instead
                ):
        super().__init__()
        self.cfg = cfg if cfg is not None else SpecConfig(sr=sr, n_fft=n_fft, hop_length=hop_length or n_fft//2, n_mels=n_mels,
            f_min=f_min, f_max=f_max, power=power, db=db, top_db=top_db, win_length=win_length)
        self._mods = {}

    @classmethod
    def from_preset(cls, name:str='quick', **overrides):
        "A `MelSpec` from one of `SPEC_PRESETS` ('quick', 'esc50', 'paper'), with optional overrides"
        if name not in SPEC_PRESETS: raise ValueError(f"Unknown spectrogram preset {name!r}: choose from {sorted(SPEC_PRESETS)}")
        return cls(cfg=SPEC_PRESETS[name].replace(**overrides))

    def _module(self, device):
        if device not in self._mods:
            c = self.cfg
            kw = dict(n_fft=c.n_fft, win_length=c.win_length, hop_length=c.hop_length, power=c.power, center=c.center, pad_mode='reflect')
            m = (T.MelSpectrogram(sample_rate=c.sr, f_min=c.f_min, f_max=c.f_max, n_mels=c.n_mels, norm='slaney', mel_scale='slaney', **kw)
                 if c.n_mels else T.Spectrogram(**kw))
            self._mods[device] = m.to(device)
        return self._mods[device]

    def __getstate__(self): return {**self.__dict__, '_mods': {}}

    def encodes(self, x:AudioTensor)->TensorSpec:
        c, sr = self.cfg, getattr(x, 'sr', None)
        if sr is not None and sr != c.sr:
            raise ValueError(f"MelSpec expects audio at sr={c.sr} Hz but got sr={sr} Hz: resample it (AudioBlock(sr={c.sr})) or set MelSpec(sr={sr})")
        xt = torch.Tensor(x).float() if isinstance(x, torch.Tensor) else torch.as_tensor(x, dtype=torch.float32)
        if xt.shape[-1] < c.n_fft: xt = torch.nn.functional.pad(xt, (0, c.n_fft - xt.shape[-1]))  # short clips: zero-padded to one window
        s = self._module(xt.device)(xt)
        if c.db: s = power_to_db(s, c.power, top_db=c.top_db)
        return TensorSpec(s, cfg=c)

AudioToSpec = MelSpec
