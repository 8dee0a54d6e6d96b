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

__all__ = ['SHIFT_KINDS', 'Shift', 'parse_shift', 'parse_shifts']

SHIFT_KINDS = {'gain': 'gain:DB', 'tilt': 'tilt:DB_PER_OCTAVE', 'band': 'band:LOW_HZ:HIGH_HZ:DB',
               'noise': 'noise:SNR_DB[:white|pink]', 'resample': 'resample:HZ'}

def _resample(x, orig:int, new:int):
    "The resampling `load_audio` uses (one place to switch it)"
    return dsp.resample(x, orig, new)

def _fmt(v:float)->str: return f"{v:g}"

@dataclass(frozen=True)
class Shift:
    "A named waveform shift; `name` (e.g. 'gain:-20') is its canonical spelling and its results column `acc@<name>`"
    kind:str
    args:tuple
    seed:int = 0  # the noise's seed
    @property
    def name(self): return ':'.join([self.kind, *[a if isinstance(a, str) else _fmt(a) for a in self.args]])
    def __call__(self, x:torch.Tensor, # `[B,C,N]` float waveforms
                 sr:int, # their sample rate (Hz)
                 noise=None, # for `noise`: the `AddNoise` to use across calls (so chunks draw one seeded stream)
                )->torch.Tensor:
        "The shifted waveforms (a new tensor; `x` is untouched)"
        x = x.as_subclass(torch.Tensor).float()
        if self.kind == 'gain': return x * 10 ** (self.args[0] / 20)
        if self.kind in ('tilt', 'band'):
            f = torch.fft.rfftfreq(x.shape[-1], 1 / sr, device=x.device, dtype=torch.float64)
            if self.kind == 'tilt': g_db = self.args[0] * torch.log2(f.clamp(min=20.) / 1000.)
            else: g_db = torch.where((f >= self.args[0]) & (f <= self.args[1]), self.args[2], 0.).double()
            g = (10 ** (g_db / 20)).to(x.dtype)
            return torch.fft.irfft(torch.fft.rfft(x) * g, n=x.shape[-1])
        if self.kind == 'noise':
            noise = noise if noise is not None else self.noise_tfm()
            return noise(AudioTensor(x, sr=sr), split_idx=0).as_subclass(torch.Tensor)
        if self.kind == 'resample':
            mid = int(self.args[0])
            if mid >= sr: raise ValueError(f"Shift {self.name}: the middle rate must be below the audio's rate {sr} Hz")
            y = _resample(_resample(x, sr, mid), mid, sr)
            n = x.shape[-1]
            return torch.nn.functional.pad(y, (0, max(0, n - y.shape[-1])))[..., :n]
        raise ValueError(f"Unknown shift kind {self.kind!r}")
    def noise_tfm(self):
        "The seeded `AddNoise` of a `noise` shift"
        return AddNoise(snr_db=self.args[0], color=self.args[1] if len(self.args) > 1 else 'white', seed=self.seed)

def parse_shift(spec:str, # e.g. 'gain:-20', 'tilt:-3', 'band:2000:4000:-12', 'noise:10:pink', 'resample:8000'
                seed:int=0, # seed of a noise shift
               )->Shift:
    "A `Shift` from its name; errors say what each kind takes"
    parts = str(spec).strip().split(':')
    kind, raw = parts[0], parts[1:]
    if kind not in SHIFT_KINDS:
        raise ValueError(f"Unknown shift {spec!r}: choose from {', '.join(SHIFT_KINDS.values())}")
    try:
        if kind == 'noise' and len(raw) == 2:
            if raw[1] not in ('white', 'pink'): raise ValueError
            args = (float(raw[0]), raw[1])
        else: args = tuple(float(a) for a in raw)
    except ValueError: raise ValueError(f"Shift {spec!r} is not of the form {SHIFT_KINDS[kind]}") from None
    n = {'gain': (1,), 'tilt': (1,), 'band': (3,), 'noise': (1, 2), 'resample': (1,)}[kind]
    if len(args) not in n or not all(math.isfinite(a) for a in args if not isinstance(a, str)):
        raise ValueError(f"Shift {spec!r} is not of the form {SHIFT_KINDS[kind]}")
    if kind == 'band' and not 0 <= args[0] < args[1]:
        raise ValueError(f"Shift {spec!r}: the band needs 0 <= LOW_HZ < HIGH_HZ")
    if kind == 'resample' and (args[0] <= 0 or args[0] != int(args[0])):
        raise ValueError(f"Shift {spec!r}: HZ must be a positive integer")
    return Shift(kind, args, seed)

def parse_shifts(specs, seed:int=0)->list:
    "`Shift`s from a comma list or a sequence of names; the same shift twice is an error"
    if isinstance(specs, str): specs = [s for s in specs.replace(' ', '').split(',') if s]
    out = [parse_shift(s, seed) for s in (specs or [])]
    names = [s.name for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup: raise ValueError(f"--shift lists {', '.join(dup)} twice")
    return out
