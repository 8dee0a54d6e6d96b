"""torchaudio 0.8's `Spectrogram`, `MelSpectrogram`, `AmplitudeToDB` and `MFCC`, with their signatures and defaults,
computed by `fastnorm.dsp` (no torchaudio). fastaudio 1.0.2 pinned torchaudio<0.9 and read its settings from these
signatures, so `AudioToSpec`, `AudioToMFCC` and `AudioConfig` are built on these modules."""
from __future__ import annotations
import warnings
import numpy as np, torch
from torch import nn
from ... import dsp

__all__ = ['Spectrogram', 'MelSpectrogram', 'AmplitudeToDB', 'MFCC', 'ta_mel_filterbank']

def _unsupported(name, value, what):
    raise NotImplementedError(f"`{name}={value!r}` is not supported by fastnorm.fastaudio ({what}): fastnorm computes "
                              f"spectrograms with its own pure-torch front end, fastnorm.dsp")

def _check_common(window_fn, wkwargs, onesided, power):
    if window_fn is not torch.hann_window: _unsupported('window_fn', window_fn, 'only torch.hann_window')
    if wkwargs is not None: _unsupported('wkwargs', wkwargs, 'the window is a periodic Hann window')
    if not onesided: _unsupported('onesided', onesided, 'only one-sided spectrograms')
    if power is None: _unsupported('power', power, 'complex spectrograms')
    if power <= 0: raise ValueError(f"`power` must be positive ({power} given)")

def ta_mel_filterbank(n_freqs:int, # STFT bins, n_fft//2 + 1
                      f_min:float, # lowest edge (Hz)
                      f_max:float, # highest edge (Hz); may exceed sample_rate/2 (those filters get no weight)
                      n_mels:int, # filters
                      sample_rate:int, # the rate it is made for (torchaudio's `sample_rate`, not the audio's)
                      norm:str|None=None, # None (peak 1) or 'slaney' (equal area)
                     )->torch.Tensor:
    "torchaudio 0.8's HTK filterbank `[n_freqs, n_mels]`: bins at `linspace(0, sample_rate // 2, n_freqs)`"
    nyq = sample_rate // 2
    if f_max <= nyq and nyq == sample_rate / 2:
        return dsp.mel_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate, norm=norm, mel_scale='htk')
    # beyond Nyquist (torchaudio allows it) or an odd rate: the same triangles, evaluated on torchaudio's bins
    if norm not in (None, 'slaney'): raise ValueError(f"`norm` must be None or 'slaney' ({norm!r} given)")
    bins = np.linspace(0, nyq, n_freqs)
    edges = dsp.mel_to_hz(np.linspace(dsp.hz_to_mel(f_min, 'htk'), dsp.hz_to_mel(f_max, 'htk'), n_mels + 2), 'htk')
    w = np.diff(edges)
    up = (bins[:, None] - edges[None, :-2]) / w[None, :-1]
    down = (edges[None, 2:] - bins[:, None]) / w[None, 1:]
    fb = np.maximum(0., np.minimum(up, down))
    if norm == 'slaney': fb = fb * (2. / (edges[2:] - edges[:-2]))[None]
    return torch.from_numpy(fb.astype(np.float32))

class Spectrogram(nn.Module):
    "torchaudio 0.8's `Spectrogram`: `[..., N]` waveforms to `[..., n_fft//2+1, T]` power (or magnitude) spectrograms"
    def __init__(self, n_fft:int=400, win_length:int|None=None, hop_length:int|None=None, pad:int=0,
                 window_fn=torch.hann_window, power:float|None=2., normalized:bool=False, wkwargs:dict|None=None,
                 center:bool=True, pad_mode:str='reflect', onesided:bool=True):
        super().__init__()
        _check_common(window_fn, wkwargs, onesided, power)
        self.n_fft, self.pad, self.power, self.normalized = n_fft, pad, power, normalized
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        self.center, self.pad_mode = center, pad_mode

    def spec(self, x:torch.Tensor, mel_fb=None)->torch.Tensor:
        "The spectrogram of `x`, mel-weighted by `mel_fb` when given"
        x = torch.as_tensor(x).float()
        if self.pad > 0: x = nn.functional.pad(x, (self.pad, self.pad))
        p = self.power if self.power in (1., 2.) else 1.
        s = dsp.spectrogram(x, self.n_fft, self.hop_length, self.win_length, p, self.center, self.pad_mode)
        if p != self.power: s = s.pow(self.power)
        if self.normalized: s = s / _win_energy(self.win_length) ** (self.power / 2)  # torchaudio: STFT / sqrt(sum w²)
        if mel_fb is not None: s = torch.matmul(s.transpose(-1, -2), mel_fb.to(s.device, s.dtype)).transpose(-1, -2)
        return s

    def forward(self, x): return self.spec(x)

def _win_energy(n): return float(torch.hann_window(n, periodic=True, dtype=torch.float64).pow(2).sum())

class MelSpectrogram(Spectrogram):
    "torchaudio 0.8's `MelSpectrogram` (HTK mel scale): its filterbank is made for `sample_rate`, whatever the audio's"
    def __init__(self, sample_rate:int=16000, n_fft:int=400, win_length:int|None=None, hop_length:int|None=None,
                 f_min:float=0., f_max:float|None=None, pad:int=0, n_mels:int=128, window_fn=torch.hann_window,
                 power:float|None=2., normalized:bool=False, wkwargs:dict|None=None, center:bool=True,
                 pad_mode:str='reflect', onesided:bool=True, norm:str|None=None):
        super().__init__(n_fft, win_length, hop_length, pad, window_fn, power, normalized, wkwargs, center, pad_mode,
                         onesided)
        self.sample_rate, self.n_mels, self.f_min, self.norm = sample_rate, n_mels, f_min, norm
        self.f_max = f_max if f_max is not None else float(sample_rate // 2)
        if not 0 <= f_min < self.f_max: raise ValueError(f"Need 0 <= f_min < f_max ({f_min}, {self.f_max} given)")
        self.fb = ta_mel_filterbank(n_fft // 2 + 1, f_min, self.f_max, n_mels, sample_rate, norm)
        empty = int((self.fb.amax(0) == 0).sum())
        if empty:  # as torchaudio warned: those mel bins are always 0 (-100 dB), so their std over a dataset is 0
            warnings.warn(f"{empty} of the {n_mels} mel filters have all zero values: n_mels={n_mels} may be too high "
                          f"for n_fft={n_fft} ({n_fft // 2 + 1} frequency bins)")

    def forward(self, x): return self.spec(x, self.fb)

class AmplitudeToDB(nn.Module):
    "torchaudio's `AmplitudeToDB`: 10 log10 (power) or 20 log10 (magnitude), floor 1e-10, ref 1; `top_db` per item"
    def __init__(self, stype:str='power', top_db:float|None=None):
        super().__init__()
        if stype not in ('power', 'magnitude'):
            raise ValueError(f"`stype` must be 'power' or 'magnitude' ({stype!r} given)")
        self.stype, self.top_db = stype, top_db

    def forward(self, x):
        return dsp.power_to_db(x, 2. if self.stype == 'power' else 1., amin=1e-10, top_db=self.top_db)

class MFCC(nn.Module):
    "torchaudio 0.8's `MFCC`: a mel spectrogram (`melkwargs`), in dB (top_db 80) or log, then an orthonormal DCT-II"
    def __init__(self, sample_rate:int=16000, n_mfcc:int=40, dct_type:int=2, norm:str|None='ortho',
                 log_mels:bool=False, melkwargs:dict|None=None):
        super().__init__()
        if dct_type != 2: raise ValueError(f"DCT type not supported: {dct_type}")
        self.sample_rate, self.n_mfcc, self.log_mels = sample_rate, n_mfcc, log_mels
        self.MelSpectrogram = MelSpectrogram(sample_rate=sample_rate, **(melkwargs or {}))
        if n_mfcc > self.MelSpectrogram.n_mels: raise ValueError("Cannot select more MFCC coefficients than # mel bins")
        self.amplitude_to_DB = AmplitudeToDB('power', 80.)
        self.dct_mat = dsp.dct_matrix(n_mfcc, self.MelSpectrogram.n_mels, norm)

    def forward(self, x):
        m = self.MelSpectrogram(x)
        m = torch.log(m + 1e-6) if self.log_mels else self.amplitude_to_DB(m)
        return torch.matmul(m.transpose(-1, -2), self.dct_mat.to(m.device)).transpose(-1, -2)
