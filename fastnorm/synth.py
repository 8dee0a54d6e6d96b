"The embedded dataset: a deterministic synthetic dataset in ESC-50's exact layout, made on first use."
from __future__ import annotations
import json
from pathlib import Path
import numpy as np, pandas as pd, soundfile as sf
from .utils import fastnorm_home, atomic_dir
from .data import ESC50_COLUMNS
from .checks import check_int, check_number, check_positive

__all__ = ['SYNTH_CLASSES', 'synth_esc50']

def _t(n, sr): return np.arange(n) / sr

def _band_noise(rng, n, sr, lo, hi):
    "White noise limited to [lo, hi] Hz"
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1/sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n)

def _tone(rng, n, sr):
    f = rng.uniform(300, min(3000, .4*sr))
    t = _t(n, sr)
    return np.sin(2*np.pi*f*t + .002*f*np.sin(2*np.pi*rng.uniform(3, 6)*t))

def _chirp(rng, n, sr, up=True):
    f0, f1 = rng.uniform(200, 600), rng.uniform(.25*sr, .4*sr)
    if not up: f0, f1 = f1, f0
    t, dur = _t(n, sr), n / sr
    k = np.log(f1/f0) / dur  # exponential sweep
    return np.sin(2*np.pi*f0*(np.exp(k*t) - 1)/k)

def _harmonic(rng, n, sr):
    f0, t = rng.uniform(100, 300), _t(n, sr)
    ks = np.arange(1, 13)
    ks = ks[ks*f0 < .45*sr]
    return (np.sin(2*np.pi*f0*ks[:,None]*t + rng.uniform(0, 2*np.pi, (len(ks),1))) / ks[:,None]).sum(0)

def _noise_low(rng, n, sr):  return _band_noise(rng, n, sr, 80, rng.uniform(400, 900))
def _noise_high(rng, n, sr): return _band_noise(rng, n, sr, rng.uniform(.25, .3)*sr, .45*sr)

def _clicks(rng, n, sr):
    x = np.zeros(n)
    step = int(sr / rng.uniform(6, 20))
    x[rng.integers(0, step)::step] = 1.
    return np.convolve(x, np.exp(-np.arange(int(.003*sr)) / (.0005*sr)), mode='same')

def _am_noise(rng, n, sr):
    t = _t(n, sr)
    return rng.standard_normal(n) * (1 + np.sin(2*np.pi*rng.uniform(2, 6)*t)) / 2

def _fm_tone(rng, n, sr):
    fc, t = rng.uniform(800, min(2500, .3*sr)), _t(n, sr)
    return np.sin(2*np.pi*fc*t + rng.uniform(3, 8)*np.sin(2*np.pi*rng.uniform(40, 120)*t))

def _beeps(rng, n, sr):
    t, f = _t(n, sr), rng.uniform(1000, min(3500, .4*sr))
    env = ((t * rng.uniform(2, 4)) % 1 < .3).astype(float)
    return np.sin(2*np.pi*f*t) * env

def _crackle(rng, n, sr):
    x = (rng.random(n) < 80/sr) * rng.standard_normal(n) * 5
    return x + .05*_band_noise(rng, n, sr, 1000, .45*sr)

def _beating(rng, n, sr):
    f, t = rng.uniform(150, 500), _t(n, sr)
    return np.sin(2*np.pi*f*t) + np.sin(2*np.pi*(f + rng.uniform(1, 4))*t)

def _chirp_down(rng, n, sr): return _chirp(rng, n, sr, up=False)

SYNTH_CLASSES = {  # category name -> generator of one clip's clean signal
    'tone': _tone, 'chirp_up': _chirp, 'chirp_down': _chirp_down, 'harmonic_stack': _harmonic,
    'noise_low': _noise_low, 'noise_high': _noise_high, 'click_train': _clicks, 'am_noise': _am_noise,
    'fm_tone': _fm_tone, 'beeps': _beeps, 'crackle': _crackle, 'beating': _beating}

SNR_DB = (-10., 15.)            # clean signal over background noise, drawn per clip
TILT_DB_PER_OCT = (-9., 9.)     # a fold's spectral tilt around 1 kHz
EQ_DB = (-15., 15.)             # a fold's band EQ bump

def _device_response(rng, n, sr):
    "A fold's 'recording device': a spectral tilt (dB/octave around 1 kHz) and one band EQ bump, as an rfft gain"
    f = np.fft.rfftfreq(n, 1/sr)
    tilt, fc, gain = rng.uniform(*TILT_DB_PER_OCT), rng.uniform(300, .35*sr), rng.uniform(*EQ_DB)
    db = tilt*np.log2(np.maximum(f, 20)/1000) + gain*np.exp(-.5*(np.log2(np.maximum(f, 20)/fc)/.5)**2)
    return 10**(db/20)

def _pink(rng, n):
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[1:] /= np.sqrt(np.arange(1, len(spec)))
    return np.fft.irfft(spec, n)

def _rms(x): return np.sqrt(np.mean(x**2)) + 1e-12

def _clip(rng, gen, n, sr, response):
    """One clip: clean signal at unit rms + pink background at SNR_DB, coloured by the fold's device, peak gain
    -40..-3 dBFS"""
    x = gen(rng, n, sr)
    x = x / _rms(x)
    bg = _pink(rng, n)
    x = x + bg / _rms(bg) * 10**(-rng.uniform(*SNR_DB)/20)
    x = np.fft.irfft(np.fft.rfft(x) * response, n)
    return (x / (np.abs(x).max() + 1e-12) * 10**(rng.uniform(-40, -3)/20)).astype(np.float32)

def _params(seed, n_classes, clips_per_class, seconds, sr):
    return dict(seed=seed, n_classes=n_classes, clips_per_class=clips_per_class, seconds=float(seconds), sr=sr,
                version=2)

def _complete(dest:Path, params)->bool:
    "Does `dest` hold a finished dataset made with `params`, all its files present?"
    marker, csv = dest/'.synth_esc50.json', dest/'meta'/'esc50.csv'
    if not (marker.is_file() and csv.is_file()): return False
    if json.loads(marker.read_text()) != params: return False
    return all((dest/'audio'/f).is_file() for f in pd.read_csv(csv)['filename'])

def synth_esc50(dest=None, # folder to make it in; default: $FASTNORM_HOME/data/synth_esc50-...
                seed:int=0, # the dataset is a pure function of its arguments
                n_classes:int=10, # number of sound families, at most len(SYNTH_CLASSES)
                clips_per_class:int=40, # a multiple of 5 keeps the 5 folds balanced
                seconds:float=2.0, # clip length
                sr:int=16000, # sample rate (Hz)
               )->Path:
    """Make (first use) or reuse a small synthetic dataset in ESC-50's exact layout: `audio/*.wav`, `meta/esc50.csv`,
    5 folds"""
    n_classes = check_int('n_classes', n_classes, lo=1)
    check_number('n_classes', n_classes, hi=len(SYNTH_CLASSES))
    clips_per_class = check_int('clips_per_class', clips_per_class, lo=5)  # one clip per fold at least
    check_positive('seconds', seconds)
    sr = check_int('sr', sr, lo=4000)
    params = _params(seed, n_classes, clips_per_class, seconds, sr)
    if dest is None:
        dest = fastnorm_home()/'data'/f'synth_esc50-s{seed}-c{n_classes}-k{clips_per_class}-{seconds:g}s-{sr}'
    dest = Path(dest)
    if _complete(dest, params): return dest
    if dest.exists() and any(dest.iterdir()) and not (dest/'.synth_esc50.json').exists():
        raise FileExistsError(f"{dest} exists and is not a fastnorm synthetic dataset: choose another `dest`")
    with atomic_dir(dest) as tmp:
        (tmp/'audio').mkdir()
        (tmp/'meta').mkdir()
        n = int(round(seconds*sr))
        responses = {f: _device_response(np.random.default_rng([seed, 1, f]), n, sr) for f in range(1, 6)}
        rows, names = [], list(SYNTH_CLASSES)[:n_classes]
        for target, cat in enumerate(names):
            for i in range(clips_per_class):
                fold, src = i % 5 + 1, 100000 + 1000*target + i
                rng = np.random.default_rng([seed, 2, target, i])
                fn = f'{fold}-{src}-A-{target}.wav'
                sf.write(tmp/'audio'/fn, _clip(rng, SYNTH_CLASSES[cat], n, sr, responses[fold]), sr, subtype='PCM_16')
                rows.append(dict(filename=fn, fold=fold, target=target, category=cat, esc10=target < 10, src_file=src,
                                 take='A'))
        meta = pd.DataFrame(rows, columns=ESC50_COLUMNS).sort_values(['fold', 'target', 'src_file'])
        meta.to_csv(tmp/'meta'/'esc50.csv', index=False)
        (tmp/'.synth_esc50.json').write_text(json.dumps(params))
    return dest
