"""Deployment shifts: what a new recording setup does to a waveform, as named, deterministic conditions for evaluation.

`parse_shift('gain:-20')` gives a `Shift`; `shift(x, sr)` applies it to `[B,C,N]` audio (float, any device). The names:

- `gain:DB` a level change (e.g. `gain:-20`);
- `tilt:DB_PER_OCTAVE` a microphone/EQ change: a spectral tilt around 1 kHz (flat below 20 Hz), e.g. `tilt:-3`;
- `band:LOW_HZ:HIGH_HZ:DB` a band boost or cut, e.g. `band:2000:4000:-12`;
- `noise:SNR_DB` (or `noise:SNR_DB:pink`) noise at that SNR against each clip's rms (`AddNoise`, fixed seed);
- `resample:HZ` a different sample-rate chain: down to HZ and back up (everything above HZ/2 is gone)."""
from __future__ import annotations
import math
from dataclasses import dataclass
import torch
from ..audio import AudioTensor
from ..waveaug import AddNoise
from .. import dsp

__all__ = ['SHIFT_EFFECTS', 'Shift', 'parse_shift', 'parse_shifts']

# each effect's spelling, for the messages and the CLI's help
SHIFT_EFFECTS = {'gain': 'gain:DB', 'tilt': 'tilt:DB_PER_OCTAVE', 'band': 'band:LOW_HZ:HIGH_HZ:DB',
                 'noise': 'noise:SNR_DB[:white|pink]', 'resample': 'resample:HZ'}
_N_ARGS = {'gain': (1,), 'tilt': (1,), 'band': (3,), 'noise': (1, 2), 'resample': (1,)}

def _resample(x, orig:int, new:int):
    "The resampling `load_audio` uses (one place to switch it)"
    return dsp.resample(x, orig, new)

def _fmt(v:float)->str: return f"{v:g}"

def _gain(x, sr, args, noise): return x * 10 ** (args[0] / 20)

def _eq(gain_db):
    "An effect that scales each frequency of the spectrum by `gain_db(freqs, args)` dB"
    def apply(x, sr, args, noise):
        f = torch.fft.rfftfreq(x.shape[-1], 1 / sr, device=x.device, dtype=torch.float64)
        g = (10 ** (gain_db(f, args) / 20)).to(x.dtype)
        return torch.fft.irfft(torch.fft.rfft(x) * g, n=x.shape[-1])
    return apply

def _tilt_db(f, args): return args[0] * torch.log2(f.clamp(min=20.) / 1000.)

def _band_db(f, args): return torch.where((f >= args[0]) & (f <= args[1]), args[2], 0.).double()

def _noise(x, sr, args, noise): return noise(AudioTensor(x, sr=sr), split_idx=0).as_subclass(torch.Tensor)

def _chain(x, sr, args, noise):
    "Down to the middle rate and back, cut or padded to the input's length"
    mid = int(args[0])
    if mid >= sr:
        raise ValueError(f"Shift resample:{mid}: the middle rate must be below the audio's rate {sr} Hz")
    y = _resample(_resample(x, sr, mid), mid, sr)
    n = x.shape[-1]
    return torch.nn.functional.pad(y, (0, max(0, n - y.shape[-1])))[..., :n]

_APPLY = {'gain': _gain, 'tilt': _eq(_tilt_db), 'band': _eq(_band_db), 'noise': _noise, 'resample': _chain}

@dataclass(frozen=True)
class Shift:
    "A named waveform shift; `name` (e.g. 'gain:-20') is its canonical spelling and its results column `acc@<name>`"
    effect:str  # a key of `SHIFT_EFFECTS`
    args:tuple
    seed:int = 0  # the noise's seed
    @property
    def name(self): return ':'.join([self.effect, *[a if isinstance(a, str) else _fmt(a) for a in self.args]])
    @property
    def column(self)->str:
        "Its column in results.csv"
        return f'acc@{self.name}'
    def __call__(self, x:torch.Tensor, # `[B,C,N]` float waveforms
                 sr:int, # their sample rate (Hz)
                 noise=None, # for `noise`: the `AddNoise` to use across calls (so chunks draw one seeded stream)
                )->torch.Tensor:
        "The shifted waveforms (a new tensor; `x` is untouched)"
        if self.effect not in _APPLY:
            raise ValueError(f"Unknown shift effect {self.effect!r}")
        if self.effect == 'noise' and noise is None:
            noise = self.noise_tfm()
        return _APPLY[self.effect](x.as_subclass(torch.Tensor).float(), sr, self.args, noise)
    def noise_tfm(self):
        "The seeded `AddNoise` of a `noise` shift"
        return AddNoise(snr_db=self.args[0], color=self.args[1] if len(self.args) > 1 else 'white', seed=self.seed)

def _args(spec:str, effect:str, raw:list)->tuple:
    "The arguments of shift `spec`, as numbers (and a noise colour), checked against `effect`'s form"
    form = SHIFT_EFFECTS[effect]
    try:
        if effect == 'noise' and len(raw) == 2 and raw[1] not in ('white', 'pink'):
            raise ValueError
        args = tuple(a if i == 1 and effect == 'noise' else float(a) for i, a in enumerate(raw))
    except ValueError:
        raise ValueError(f"Shift {spec!r} is not of the form {form}") from None
    if len(args) not in _N_ARGS[effect] or not all(math.isfinite(a) for a in args if not isinstance(a, str)):
        raise ValueError(f"Shift {spec!r} is not of the form {form}")
    return args

def parse_shift(spec:str, # e.g. 'gain:-20', 'tilt:-3', 'band:2000:4000:-12', 'noise:10:pink', 'resample:8000'
                seed:int=0, # seed of a noise shift
               )->Shift:
    "A `Shift` from its name; errors say what each effect takes"
    parts = str(spec).strip().split(':')
    effect = parts[0]
    if effect not in SHIFT_EFFECTS:
        raise ValueError(f"Unknown shift {spec!r}: choose from {', '.join(SHIFT_EFFECTS.values())}")
    args = _args(spec, effect, parts[1:])
    if effect == 'band' and not 0 <= args[0] < args[1]:
        raise ValueError(f"Shift {spec!r}: the band needs 0 <= LOW_HZ < HIGH_HZ")
    if effect == 'resample' and (not args[0] > 0 or args[0] != int(args[0])):
        raise ValueError(f"Shift {spec!r}: HZ must be a positive integer")
    return Shift(effect, args, seed)

def parse_shifts(specs, seed:int=0)->list:
    "`Shift`s from a comma list or a sequence of names; the same shift twice is an error"
    if isinstance(specs, str):
        specs = [s for s in specs.replace(' ', '').split(',') if s]
    out = [parse_shift(s, seed) for s in (specs or [])]
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"--shift lists {', '.join(dup)} twice")
    return out
