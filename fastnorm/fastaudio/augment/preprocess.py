"""fastaudio's `RemoveSilence` and `Resample`: silence found from frame energies (as librosa's `effects.split`), and
scipy's `resample_poly`, as fastaudio did. (`fastnorm.dsp.resample` builds a polyphase kernel of size about
orig*new for the reduced rates: fine for 44100 -> 16000, gigabytes for coprime rates such as 16000 -> 71993.)"""
from __future__ import annotations
import math
from enum import Enum
import numpy as np, torch
from scipy.signal import resample_poly
from fasttransform import Transform
from ..core.signal import AudioTensor

__all__ = ['RemoveType', 'RemoveSilence', 'Resample', 'nonsilent_intervals']

class RemoveType(Enum):
    "How `RemoveSilence` removes silence"
    Trim = 'trim'
    All = 'all'
    Split = 'split'

def nonsilent_intervals(x:np.ndarray, # `[N]` or `[C,N]` samples
                        top_db:float=60, # a frame is silent below the loudest frame minus `top_db`
                        frame_length:int=2048, # frame for the rms
                        hop_length:int=512, # hop between frames
                       )->np.ndarray:
    "`[k,2]` start/end samples of the non-silent runs, as `librosa.effects.split` (centred, zero-padded frames)"
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    pad = frame_length // 2
    xp = np.pad(x, ((0, 0), (pad, pad)))
    n_frames = 1 + (xp.shape[-1] - frame_length) // hop_length
    idx = np.arange(frame_length)[None] + hop_length * np.arange(n_frames)[:, None]
    power = np.mean(xp[:, idx] ** 2, axis=-1)  # [C, frames]: mean square per frame
    amin2 = 1e-10  # (librosa's amplitude floor 1e-5)²
    db = 10 * np.log10(np.maximum(amin2, power)) - 10 * np.log10(max(amin2, power.max()))
    loud = db.max(0) > -top_db  # loud in any channel
    edges = list(np.flatnonzero(np.diff(loud.astype(int))) + 1)
    if loud[0]: edges.insert(0, 0)
    if loud[-1]: edges.append(len(loud))
    return np.minimum(np.array(edges, dtype=int) * hop_length, x.shape[-1]).reshape(-1, 2)

def _merge(runs, pad):
    "Join runs whose gap is at most 2*pad; widen each by `pad` (clipped to the last run's end)"
    end, out, i = runs[-1][1], [], 0
    while i < len(runs):
        start = runs[i][0]
        while runs[i][1] < end and runs[i][1] + pad >= runs[i + 1][0] - pad: i += 1
        out.append((max(start - pad, 0), min(runs[i][1] + pad, end)))
        i += 1
    return out

class RemoveSilence(Transform):
    "Remove silences longer than 2*`pad_ms` (`threshold` dB below the peak): trim the ends, or drop them all"
    def __init__(self, remove_type=RemoveType.Trim, threshold:float=20, pad_ms:float=20):
        super().__init__()
        self.remove_type, self.threshold, self.pad_ms = remove_type, threshold, pad_ms

    def encodes(self, ai:AudioTensor)->AudioTensor:
        if self.remove_type is None: return ai
        if self.remove_type not in (RemoveType.Trim, RemoveType.Split, RemoveType.All):
            raise ValueError(f"Valid options for silence removal are None, RemoveType.Split, RemoveType.Trim, "
                             f"RemoveType.All, but not '{self.remove_type}'.")
        pad, n = int(self.pad_ms / 1000 * ai.sr), ai.shape[-1]
        if pad > n or pad <= 0: return ai
        runs = nonsilent_intervals(ai.detach().cpu().numpy(), top_db=self.threshold, hop_length=pad)
        if self.remove_type == RemoveType.Trim: return ai[..., max(runs[0, 0] - pad, 0):runs[-1, -1] + pad]
        parts = [ai[..., max(a - pad, 0):min(b + pad, n)] for a, b in _merge(runs, pad)]
        return torch.cat(parts, dim=-1)  # Split and All give the same samples: the parts joined end to end

class Resample(Transform):
    "Resample to `sr_new` with scipy's `resample_poly` (fastaudio's numbers exactly), any pair of integer rates"
    def __init__(self, sr_new:int):
        super().__init__()
        self.sr_new = sr_new

    def encodes(self, ai:AudioTensor)->AudioTensor:
        if ai.sr == self.sr_new: return ai
        g = math.gcd(int(ai.sr), int(self.sr_new))
        out = resample_poly(ai.detach().cpu().numpy(), int(self.sr_new) // g, int(ai.sr) // g, axis=-1)
        return type(ai)(torch.from_numpy(out.astype(np.float32)).to(ai.device), sr=self.sr_new)
