"""Back from spectrograms to audio you can listen to: undo dB, invert the mel filterbank (non-negative least squares),
then Griffin-Lim.

Griffin-Lim is written here rather than borrowed: fastnorm does not use torchaudio (see `dsp.py`), and librosa's
works on one numpy item at a time, while this one runs on a whole batch on its device.
"""
from __future__ import annotations
import math
from functools import lru_cache
import torch
from .audio import AudioTensor
from .spec import SpecConfig, TensorSpec
from .dsp import mel_filterbank, db_to_power
from .checks import check_int, check_number, check_positive

__all__ = ['mel_pinv', 'mel_to_linear', 'griffinlim', 'spec_to_audio']

@lru_cache(maxsize=16)
def _fb_cpu(cfg:SpecConfig):
    fb = mel_filterbank(cfg.n_fft//2 + 1, cfg.f_min, cfg.fmax, cfg.n_mels, cfg.sr, cfg.mel_norm, cfg.mel_scale)
    return fb, torch.linalg.pinv(fb.T)

def mel_pinv(cfg:SpecConfig, # settings with `n_mels` set
             device=None, # where to put the matrices
            )->tuple[torch.Tensor,torch.Tensor]:
    "`MelSpec`'s filterbank `[F,M]` (mel = fbᵀ @ stft) and its pseudo-inverse `[F,M]`, cached per `cfg`"
    if not cfg.n_mels:
        raise ValueError(f"`cfg.n_mels` is None: a linear spectrogram has no mel filterbank ({cfg} given)")
    fb, pinv = _fb_cpu(cfg)
    return fb.to(device), pinv.to(device)

def mel_to_linear(mel:torch.Tensor, # `[...,M,T]` mel spectrogram in linear units (power or magnitude), non-negative
                  cfg:SpecConfig, # the settings it was made with
                  n_iter:int=32, # multiplicative NNLS updates after the pseudo-inverse (0: the clamped pseudo-inverse)
                 )->torch.Tensor:
    "`[...,F,T]` non-negative STFT `S` with fbᵀ S ≈ `mel`: pseudo-inverse start, then Lee-Seung NNLS updates"
    n_iter = check_int('n_iter', n_iter)
    if mel.shape[-2] != cfg.n_mels:
        raise ValueError(f"`mel` has {mel.shape[-2]} rows but `cfg.n_mels` is {cfg.n_mels}")
    fb, pinv = mel_pinv(cfg, mel.device)
    fb, pinv, mel = fb.to(mel.dtype), pinv.to(mel.dtype), mel.clamp(min=0)
    # pinv alone is the min-norm solution (as torchaudio's InverseMelScale, lstsq); clamping its negatives at 0 leaves
    # ~10% error in the mel domain (spectral convergence), which the NNLS updates bring to 2-5% in 10-50 steps.
    # Bins no filter covers (a row of 0 in fb) stay 0.
    s = (pinv @ mel).clamp(min=1e-12) * (fb.sum(1, keepdim=True) > 0)
    if n_iter:
        num = fb @ mel
        for _ in range(n_iter):
            s = s * num / (fb @ (fb.T @ s)).clamp(min=1e-20)
    return s

def _random_phase(mag, generator):
    dev = generator.device if generator is not None else mag.device
    u = torch.rand(mag.shape, generator=generator, device=dev).to(mag.device)
    return torch.polar(torch.ones_like(mag), 2 * math.pi * u)

def griffinlim(spec:torch.Tensor, # `[...,F,T]` STFT magnitude raised to `power` (F = n_fft//2+1), any device
               n_fft:int, # FFT size
               hop_length:int, # hop (samples)
               win_length:int|None=None, # periodic Hann window length, `None`: n_fft
               power:float=2., # `spec` is |STFT|**power
               n_iter:int=32, # Griffin-Lim iterations
               momentum:float=0.99, # fast Griffin-Lim momentum (Perraudin et al. 2013), in [0, 1); 0: plain
               length:int|None=None, # output samples, `None`: hop_length * (T-1)
               generator:torch.Generator|None=None, # RNG of the random initial phase (default: torch's global one)
               rand_init:bool=True, # random initial phase; False starts from zero phase (deterministic)
              )->torch.Tensor:
    "Waveform `[...,N]` whose STFT magnitude matches `spec`: fast Griffin-Lim with `MelSpec`'s centred frames"
    n_iter = check_int('n_iter', n_iter)
    check_number('momentum', momentum, lo=0, hi=1, hi_open=True)
    check_positive('power', power)
    if spec.shape[-2] != n_fft//2 + 1:
        raise ValueError(f"`spec` has {spec.shape[-2]} rows but n_fft={n_fft} needs {n_fft//2 + 1}")
    shape = spec.shape
    mag = spec.reshape(-1, *shape[-2:]).float().clamp(min=0).pow(1 / power)
    win = torch.hann_window(win_length or n_fft, device=spec.device)
    def stft(y):
        return torch.stft(y, n_fft, hop_length, win_length, win, center=True, pad_mode='reflect', return_complex=True)
    def istft(z): return torch.istft(z, n_fft, hop_length, win_length, win, center=True, length=length)
    angles = _random_phase(mag, generator) if rand_init else torch.ones_like(mag, dtype=torch.complex64)
    prev, m = None, momentum / (1 + momentum)  # torchaudio's and librosa's scaling of the momentum
    for _ in range(n_iter):
        rebuilt = stft(istft(mag * angles))
        angles = rebuilt if prev is None or m == 0 else rebuilt - m * prev
        angles = angles / (angles.abs() + 1e-16)
        prev = rebuilt
    y = istft(mag * angles)
    return y.reshape(*shape[:-2], y.shape[-1])

_UNDO_HINT = ("invert before normalization, or undo it first with the normalize transform's `decode` (e.g. "
              "`norm.decode(x)`; `dls.after_batch.decode` undoes the whole pipeline); pass `check=False` if the values "
              "really are what `cfg` says")

def _check_scale(x, cfg):
    "Raise on values a `MelSpec` of `cfg` cannot have made: normalized (or otherwise rescaled) spectrograms"
    if not torch.isfinite(x).all(): raise ValueError(f"The spectrogram holds NaN or Inf values: {_UNDO_HINT}")
    if not cfg.db:
        if (x < 0).any():
            raise ValueError("The spectrogram has negative values but `cfg.db` is False (power/magnitude are >= 0): "
                             f"it looks normalized; {_UNDO_HINT}")
        return
    floor = (20. / cfg.power) * -10  # power_to_db's amin of 1e-10: -100 dB for power, -200 dB for magnitude
    lo = float(x.min())
    if lo < floor - 1e-3:
        raise ValueError(f"The spectrogram has values down to {lo:.4g}, below the {floor:g} dB floor of `MelSpec`: "
                         f"it looks normalized; {_UNDO_HINT}")
    std, mean = torch.std_mean(x.flatten(-3).float(), -1)
    # a dB spectrogram of real audio spans tens of dB; mean ~0 with std ~1 is the signature of a normalized one
    bad = ((mean.abs() < 1) & (std > 0.5) & (std < 2)).flatten()
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        m, s = float(mean.flatten()[i]), float(std.flatten()[i])
        raise ValueError(f"The spectrogram looks normalized (item {i}: mean {m:.3g}, std {s:.3g}; "
                         f"dB spectrograms spread over tens of dB): {_UNDO_HINT}")

def spec_to_audio(spec:TensorSpec, # `[C,F,T]` item or `[B,C,F,T]` batch from `MelSpec` (dB or not), not normalized
                  n_iter:int=32, # Griffin-Lim iterations (quality grows up to a few hundred; 32 is a quick listen)
                  length:int|None=None, # output samples, `None`: hop_length * (T-1), about the original length
                  mel_iter:int=32, # NNLS updates of the mel inversion (see `mel_to_linear`)
                  momentum:float=0.99, # fast Griffin-Lim momentum
                  generator:torch.Generator|None=None, # RNG for the initial phase, for reproducible audio
                  check:bool=True, # refuse values `MelSpec` cannot make (normalized spectrograms)
                 )->AudioTensor:
    """Audio `[C,N]` (`[B,C,N]`) at `spec.cfg.sr` whose spectrogram approximates `spec`: undo dB, invert the mel
    filterbank, Griffin-Lim. Normalized values can't in general be told from dB ones: invert before normalization,
    or `decode` the normalization first."""
    cfg = getattr(spec, 'cfg', None)
    if not isinstance(cfg, SpecConfig):
        raise ValueError("`spec` has no `cfg` (SpecConfig): make it with `MelSpec`, "
                         "or wrap it as `TensorSpec(x, cfg=SpecConfig(...))`")
    if spec.ndim not in (3, 4):
        raise ValueError(f"`spec` must be `[C,F,T]` or `[B,C,F,T]` (shape {tuple(spec.shape)} given)")
    if spec.shape[-2] != cfg.n_freq:
        raise ValueError(f"`spec` has {spec.shape[-2]} frequency rows but its cfg makes {cfg.n_freq}")
    if not cfg.center:
        raise ValueError("`cfg.center` is False: only centred frames (MelSpec's default) can be inverted")
    x = spec.as_subclass(torch.Tensor).float()
    if check: _check_scale(x, cfg)
    s = db_to_power(x, cfg.power) if cfg.db else x  # back to linear |STFT|**power (mel-weighted if a mel spec)
    if cfg.n_mels: s = mel_to_linear(s, cfg, mel_iter)
    y = griffinlim(s, cfg.n_fft, cfg.hop_length, cfg.win_length, cfg.power, n_iter, momentum, length, generator)
    return AudioTensor(y, sr=cfg.sr)
