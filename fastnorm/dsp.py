"""fastnorm's signal front end, in pure torch: STFT spectrograms, mel filterbanks, dB conversion and resampling.

fastnorm does not import torchaudio: its releases end at 2.11, and a torchaudio build loads only against the torch
builds it was made for, so depending on it would cap torch. Everything here runs on the tensor's own device, batched
over any leading dims, and is tested against librosa and SciPy (`tests/test_dsp.py`). The transforms (`MelSpec`,
`load_audio`, `spec_to_audio`) call these functions.
"""
from __future__ import annotations
import math
from functools import lru_cache
import numpy as np, torch
from .checks import check_choice, check_frac, check_int, check_number, check_positive

__all__ = ['hz_to_mel', 'mel_to_hz', 'mel_filterbank', 'dct_matrix', 'stft', 'spectrogram', 'power_to_db',
           'amplitude_to_db', 'db_to_power', 'resample']

MEL_SCALES = ('slaney', 'htk')
MEL_NORMS = ('slaney', None)

def hz_to_mel(f, # frequencies (Hz), scalar or array
              mel_scale:str='slaney', # 'slaney' (librosa's default: linear below 1 kHz, log above) or 'htk'
             )->np.ndarray:
    "Frequencies in Hz to mels, in float64"
    check_choice('mel_scale', mel_scale, MEL_SCALES)
    f = np.asarray(f, dtype=np.float64)
    if mel_scale == 'htk': return 2595. * np.log10(1. + f / 700.)
    lin, logstep, minlog = 200. / 3, math.log(6.4) / 27., 1000.
    return np.where(f >= minlog, minlog / lin + np.log(np.maximum(f, 1e-10) / minlog) / logstep, f / lin)

def mel_to_hz(m, # mels, scalar or array
              mel_scale:str='slaney', # 'slaney' or 'htk', as in `hz_to_mel`
             )->np.ndarray:
    "Mels to frequencies in Hz, in float64: the inverse of `hz_to_mel`"
    check_choice('mel_scale', mel_scale, MEL_SCALES)
    m = np.asarray(m, dtype=np.float64)
    if mel_scale == 'htk': return 700. * (10. ** (m / 2595.) - 1.)
    lin, logstep, minlog = 200. / 3, math.log(6.4) / 27., 1000.
    return np.where(m >= minlog / lin, minlog * np.exp(logstep * (m - minlog / lin)), lin * m)

@lru_cache(maxsize=32)
def _mel_fb(n_freqs, f_min, f_max, n_mels, sr, norm, mel_scale)->torch.Tensor:
    fft_hz = np.linspace(0, sr / 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2), mel_scale)
    widths = np.diff(edges)
    rising = (fft_hz[None] - edges[:-2, None]) / widths[:-1, None]  # [M,F]: 0 at the lower edge, 1 at the centre
    falling = (edges[2:, None] - fft_hz[None]) / widths[1:, None]  # 1 at the centre, 0 at the upper edge
    fb = np.maximum(0., np.minimum(rising, falling))
    if norm == 'slaney': fb *= (2. / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return torch.from_numpy(fb.T.astype(np.float32))

def mel_filterbank(n_freqs:int, # STFT bins, n_fft//2 + 1
                   f_min:float, # lowest filter edge (Hz)
                   f_max:float, # highest filter edge (Hz), at most sr/2
                   n_mels:int, # number of filters
                   sr:int, # sample rate (Hz)
                   norm:str|None='slaney', # 'slaney': each triangle has unit area (librosa's default); None: peak 1
                   mel_scale:str='slaney', # 'slaney' (librosa's default) or 'htk' (torchaudio's default)
                   device=None, # where to put it
                  )->torch.Tensor:
    "Triangular mel filterbank `[n_freqs, n_mels]` (mel = fbᵀ @ stft), as librosa's `filters.mel` transposed; cached"
    check_choice('norm', norm, MEL_NORMS)
    check_choice('mel_scale', mel_scale, MEL_SCALES)
    check_int('n_freqs', n_freqs, lo=2)
    check_int('n_mels', n_mels, lo=1)
    check_int('sr', sr, lo=1)
    check_number('f_min', f_min, lo=0, hi=sr / 2, hi_open=True)
    check_number('f_max', f_max, lo=f_min, hi=sr / 2, lo_open=True)
    return _mel_fb_on(int(n_freqs), float(f_min), float(f_max), int(n_mels), int(sr), norm, mel_scale,
                      torch.device(device or 'cpu'))

@lru_cache(maxsize=32)
def _mel_fb_on(*args): return _mel_fb(*args[:-1]).to(args[-1])  # one copy per device, not one per batch

@lru_cache(maxsize=8)
def _dct(n_out, n_in, norm):
    n, k = np.arange(n_in), np.arange(n_out)[:, None]
    d = np.cos(np.pi / n_in * (n + .5) * k)  # DCT-II rows
    if norm == 'ortho':
        d *= np.sqrt(2. / n_in)
        d[0] /= np.sqrt(2.)
    else: d *= 2.
    return torch.from_numpy(d.T.astype(np.float32))

def dct_matrix(n_out:int, # coefficients kept (e.g. n_mfcc)
               n_in:int, # input length (e.g. n_mels)
               norm:str|None='ortho', # 'ortho' (scipy's norm='ortho') or None (scipy's unnormalized DCT-II)
               device=None,
              )->torch.Tensor:
    "DCT-II as a matrix `[n_in, n_out]`: `x @ D` equals `scipy.fft.dct(x, type=2, norm=norm)[..., :n_out]`"
    check_choice('norm', norm, ('ortho', None))
    check_int('n_out', n_out, lo=1)
    check_number('n_out', n_out, hi=check_int('n_in', n_in, lo=1))
    return _dct(int(n_out), int(n_in), norm).to(device)  # called once per transform, so not cached per device

@lru_cache(maxsize=16)
def _window(win_length, device, dtype): return torch.hann_window(win_length, periodic=True, device=device, dtype=dtype)

def stft(x:torch.Tensor, # waveforms `[..., N]`, float, any device
         n_fft:int, # FFT size
         hop_length:int, # hop between frames (samples)
         win_length:int|None=None, # periodic Hann window length, centred in the frame; `None`: n_fft
         center:bool=True, # pad both ends by n_fft//2 so frame t is centred on sample t*hop_length
         pad_mode:str='reflect', # padding of the ends when `center`
        )->torch.Tensor:
    "Complex one-sided STFT `[..., n_fft//2+1, T]` of a periodic Hann window, as librosa's `stft` (no normalization)"
    win = _window(win_length or n_fft, x.device, x.dtype)
    flat = x.reshape(-1, x.shape[-1])
    z = torch.stft(flat, n_fft, hop_length, win_length or n_fft, win, center=center, pad_mode=pad_mode,
                   return_complex=True)
    return z.reshape(*x.shape[:-1], *z.shape[-2:])

def spectrogram(x:torch.Tensor, # waveforms `[..., N]`, float, any device
                n_fft:int, # FFT size
                hop_length:int, # hop between frames (samples)
                win_length:int|None=None, # periodic Hann window length; `None`: n_fft
                power:float=2., # 2: power |X|², 1: magnitude |X|
                center:bool=True, # centred frames with padded ends
                pad_mode:str='reflect', # padding of the ends when `center`
                mel_fb:torch.Tensor|None=None, # `[n_fft//2+1, M]` filterbank (`mel_filterbank`): a mel spectrogram
               )->torch.Tensor:
    "Power (or magnitude) spectrogram `[..., F, T]`, mel-weighted when `mel_fb` is given; librosa's numbers"
    check_choice('power', power, (1., 2.))
    z = torch.view_as_real(stft(x, n_fft, hop_length, win_length, center, pad_mode))
    re, im = z[..., 0], z[..., 1]
    s = re.square().addcmul_(im, im)  # |X|² straight from re and im: abs().pow(2) takes a sqrt only to undo it
    if power == 1.: s = s.sqrt_()
    if mel_fb is None: return s
    return torch.matmul(mel_fb.T.to(s.dtype), s)  # [M,F] @ [...,F,T]: no transposed copies of the batch

def power_to_db(x:torch.Tensor, # power (or magnitude, with power=1) spectrogram: one item `[C,F,T]` or a batch
                power:float=2., # 2: `x` is power, 10 log10; 1: `x` is magnitude, 20 log10
                amin:float=1e-10, # floor of `x` before the log (so silence is -100 dB for power)
                top_db:float|None=None, # floor each item at its own peak minus `top_db`
                item_ndim:int=3, # trailing dims that make one item; the rest are batch dims
               )->torch.Tensor:
    """dB of a spectrogram, as `librosa.power_to_db(x, ref=1, amin, top_db)` applied to each item on its own.
    An item is the last `item_ndim` dims (`[C,F,T]`), so a batch gives what its items give one by one, whatever its
    rank (torchaudio's `AmplitudeToDB` clips per item only for 4-D input)."""
    check_positive('amin', amin)
    if top_db is not None: check_number('top_db', top_db, lo=0)
    db = (20. / power) * torch.log10(x.clamp(min=amin))
    if top_db is None: return db
    k = min(item_ndim, db.ndim)
    peak = db.flatten(db.ndim - k).amax(-1) if k else db
    return torch.maximum(db, peak.reshape(*peak.shape, *([1] * k)) - top_db)

def amplitude_to_db(x:torch.Tensor, # magnitude spectrogram
                    amin:float=1e-5, # floor of the magnitude (librosa's default)
                    top_db:float|None=None, # floor each item at its own peak minus `top_db`
                    item_ndim:int=3, # trailing dims that make one item
                   )->torch.Tensor:
    "`20 log10` of a magnitude spectrogram, as `librosa.amplitude_to_db(x, ref=1)`, per item like `power_to_db`"
    return power_to_db(x, power=1., amin=amin, top_db=top_db, item_ndim=item_ndim)

def db_to_power(x:torch.Tensor, # dB values, `10 log10` of power (power=2) or `20 log10` of magnitude (power=1)
                power:float=2., # what the dB values were made from, as in `SpecConfig.power`
               )->torch.Tensor:
    "The inverse of `power_to_db` (without its floors): `10**(db/10)` for power, `10**(db/20)` for magnitude"
    return torch.pow(10., x * (power / 20.))

@lru_cache(maxsize=16)
def _resample_kernel(orig:int, new:int, width:int, rolloff:float, beta:float|None, device, dtype):
    """Polyphase windowed-sinc filters for rates reduced by their gcd, as `[(tap_start, tap_stop, weights)]` for groups
    of consecutive output phases, and the left padding `half`. Output q*new + j reads the input around
    q*orig + j*orig/new; a group holds only the taps its phases use, so the work per output sample is about
    2*half + orig/groups taps, not 2*half + orig, and the filters stay small for coprime rates (e.g. 44100 -> 16001)"""
    cutoff = rolloff * min(orig, new) / 2  # low-pass edge, in the reduced rates' units
    half = math.ceil(width * orig / (2 * cutoff))  # input samples on each side: `width` zero crossings of the sinc
    n_groups = max(1, min(new, round(orig / (2 * half + 1))))
    bounds = [round(g * new / n_groups) for g in range(n_groups + 1)]
    groups = []
    for j0, j1 in zip(bounds[:-1], bounds[1:]):  # numpy, in float64: thousands of tiny arrays for coprime rates
        t0 = j0 * orig // new  # first tap index (offset t0 - half from q*orig) that phase j0 can use
        t1 = -(-(j1 - 1) * orig // new) + 2 * half + 1  # one past the last tap of phase j1-1
        d = (np.arange(t0, t1)[:, None] - half) - np.arange(j0, j1)[None] * orig / new  # offset from each phase
        t = np.clip(d / half, -1, 1)
        win = np.cos(t * np.pi / 2) ** 2 if beta is None else np.i0(beta * np.sqrt(1 - t ** 2)) / np.i0(beta)
        h = (2 * cutoff / orig) * np.sinc(2 * cutoff / orig * d) * win * (np.abs(d) <= half)
        groups.append((t0, t1, torch.from_numpy(h).to(device=device, dtype=dtype)))
    return groups, half

def resample(x:torch.Tensor, # waveforms `[..., N]`, float, any device
             orig_sr:int, # their sample rate (Hz)
             new_sr:int, # the rate wanted (Hz)
             lowpass_width:int=10, # zero crossings of the windowed sinc on each side: sharper and slower as it grows
             rolloff:float=1.0, # low-pass edge as a fraction of the lower rate's Nyquist frequency
             beta:float|None=5.0, # Kaiser window β; `None`: Hann
            )->torch.Tensor:
    """Band-limited resampling between integer rates: a polyphase windowed-sinc filter on the input's device.
    Output length is `ceil(N * new_sr / orig_sr)`; the defaults are within 1e-3 relative RMS of
    `scipy.signal.resample_poly` on speech and music (`tests/test_dsp.py`)."""
    orig_sr, new_sr = check_int('orig_sr', orig_sr, lo=1), check_int('new_sr', new_sr, lo=1)
    check_frac('rolloff', rolloff, lo_open=True)
    check_int('lowpass_width', lowpass_width, lo=1)
    if beta is not None: check_number('beta', beta, lo=0)
    if not x.is_floating_point(): raise ValueError(f"`x` must be a float tensor ({x.dtype} given)")
    if orig_sr == new_sr: return x.clone()
    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    groups, half = _resample_kernel(orig, new, lowpass_width, rolloff, beta, x.device, x.dtype)
    n = x.shape[-1]
    n_out = -(-n * new // orig)
    n_blocks = -(-n_out // new)  # each block of `orig` input samples gives `new` output samples
    flat = x.reshape(-1, n)
    total = (n_blocks - 1) * orig + 2 * half + orig + 1
    flat = torch.nn.functional.pad(flat, (half, max(0, total - n - half)))
    parts = [flat[:, t0:].unfold(-1, t1 - t0, orig)[:, :n_blocks] @ h for t0, t1, h in groups]  # [B, blocks, phases]
    y = torch.cat(parts, -1).reshape(flat.shape[0], -1)[:, :n_out]
    return y.reshape(*x.shape[:-1], n_out)
