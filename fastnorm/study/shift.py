"""Deployment shifts: what a new recording setup does to a waveform, as named, deterministic conditions for evaluation.

`parse_shift('gain:-20')` gives a `Shift`; `shift(x, sr)` applies it to `[B,C,N]` audio (float, any device).
The effects are the entries of `SHIFTS`, each with its spelling and what it stands for (`fastnorm compare --help`
lists them), e.g. `gain:-20`, `tilt:-3`, `band:2000:4000:-12`, `noise:10:pink`, `resample:8000`."""
from __future__ import annotations
import math
from dataclasses import dataclass
from typing import Callable, NamedTuple
import torch
from ..audio import AudioTensor
from ..waveaug import AddNoise
from .. import dsp

__all__ = ['SHIFTS', 'SHIFT_EFFECTS', 'ShiftEffect', 'Shift', 'parse_shift', 'parse_shifts']

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

def _band_ok(args)->str|None: return None if 0 <= args[0] < args[1] else "the band needs 0 <= LOW_HZ < HIGH_HZ"

def _hz_ok(args)->str|None: return None if args[0] > 0 and args[0] == int(args[0]) else "HZ must be a positive integer"

class ShiftEffect(NamedTuple):
    "One effect of `--shift`: its spelling, what it does, and the arguments it takes"
    form:str  # its spelling, for the help and the messages, e.g. 'band:LOW_HZ:HIGH_HZ:DB'
    apply:Callable  # (x [B,C,N] float, sr, args, noise) -> the shifted waveforms
    doc:str  # one line: what it stands for
    n_args:tuple = (1,)  # the numbers of arguments it takes
    words:tuple = ()  # (index, choices): that argument is one of these words, not a number
    check:Callable|None = None  # (args) -> what is wrong with numbers of the right form, or None

# the registry of waveform shifts: `--shift`'s help, `parse_shift` and `Shift` read it; a new effect is one entry
SHIFTS = {
    'gain': ShiftEffect('gain:DB', _gain, 'a level change'),
    'tilt': ShiftEffect('tilt:DB_PER_OCTAVE', _eq(_tilt_db),
                        'a microphone/EQ change: a spectral tilt around 1 kHz (flat below 20 Hz)'),
    'band': ShiftEffect('band:LOW_HZ:HIGH_HZ:DB', _eq(_band_db), 'a band boost or cut', (3,), check=_band_ok),
    'noise': ShiftEffect('noise:SNR_DB[:white|pink]', _noise,
                         "noise at that SNR against each clip's rms (`AddNoise`, fixed seed)", (1, 2),
                         (1, ('white', 'pink'))),
    'resample': ShiftEffect('resample:HZ', _chain, 'another sample-rate chain: down to HZ and back up',
                            check=_hz_ok),
}
SHIFT_EFFECTS = {k: e.form for k, e in SHIFTS.items()}  # each effect's spelling, as `SHIFTS` holds them at import

@dataclass(frozen=True)
class Shift:
    "A named waveform shift; `name` (e.g. 'gain:-20') is its canonical spelling and its results column `acc@<name>`"
    effect:str  # a key of `SHIFTS`
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
        if self.effect not in SHIFTS:
            raise ValueError(f"Unknown shift effect {self.effect!r}")
        if self.effect == 'noise' and noise is None:
            noise = self.noise_tfm()
        return SHIFTS[self.effect].apply(x.as_subclass(torch.Tensor).float(), sr, self.args, noise)
    def noise_tfm(self):
        "The seeded `AddNoise` of a `noise` shift"
        return AddNoise(snr_db=self.args[0], color=self.args[1] if len(self.args) > 1 else 'white', seed=self.seed)

def _args(spec:str, effect:ShiftEffect, raw:list)->tuple:
    "The arguments of shift `spec`, as numbers (and words where `effect` takes them), checked against `effect`'s form"
    at, words = effect.words or (None, ())
    try:
        if at is not None and len(raw) > at and raw[at] not in words:
            raise ValueError
        args = tuple(a if i == at else float(a) for i, a in enumerate(raw))
    except ValueError:
        raise ValueError(f"Shift {spec!r} is not of the form {effect.form}") from None
    if len(args) not in effect.n_args or not all(math.isfinite(a) for a in args if not isinstance(a, str)):
        raise ValueError(f"Shift {spec!r} is not of the form {effect.form}")
    return args

def parse_shift(spec:str, # e.g. 'gain:-20', 'tilt:-3', 'band:2000:4000:-12', 'noise:10:pink', 'resample:8000'
                seed:int=0, # seed of a noise shift
               )->Shift:
    "A `Shift` from its name (an effect of `SHIFTS` and its arguments); errors say what each effect takes"
    parts = str(spec).strip().split(':')
    if parts[0] not in SHIFTS:
        raise ValueError(f"Unknown shift {spec!r}: choose from {', '.join(e.form for e in SHIFTS.values())}")
    effect = SHIFTS[parts[0]]
    args = _args(spec, effect, parts[1:])
    wrong = effect.check and effect.check(args)
    if wrong:
        raise ValueError(f"Shift {spec!r}: {wrong}")
    return Shift(parts[0], args, seed)

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
