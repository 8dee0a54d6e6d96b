"fastaudio's waveform augmentations: item versions (python `random`, one draw per call) and batch (`...GPU`) versions."
from __future__ import annotations
import random
from enum import Enum
import torch
from fasttransform import Transform
from fastai.vision.augment import RandTransform
from ..core.signal import AudioTensor
from ..core.spectrogram import AudioSpectrogram
from ..util import auto_batch
from . import functional as F_
from .functional import NoiseColor

__all__ = ['AudioPadType', 'pad_to', 'ResizeSignal', 'shift_signal', 'SignalShifter', 'NoiseColor', 'AddNoise',
           'AddNoiseGPU', 'ChangeVolume', 'ChangeVolumeGPU', 'SignalCutout', 'SignalCutoutGPU', 'SignalLoss',
           'SignalLossGPU', 'DownmixMono']

class AudioPadType(Enum):
    "How short signals (and spectrograms) are padded"
    Zeros = 'zeros'  # zeros on both sides, a random split
    Zeros_After = 'zeros_after'  # zeros at the end
    Repeat = 'repeat'  # the signal repeated

def pad_to(x, width, pad_mode):
    "`x` `[..., n]` padded along its last dim to `width` by `pad_mode`"
    n = x.shape[-1]
    if pad_mode in (AudioPadType.Zeros, AudioPadType.Zeros_After):
        front = random.randint(0, width - n) if pad_mode == AudioPadType.Zeros else 0
        return torch.nn.functional.pad(x, (front, width - n - front))
    if pad_mode == AudioPadType.Repeat: return x.repeat(*([1] * (x.ndim - 1)), width // n + 1)[..., :width]
    raise ValueError(f"pad_mode {pad_mode} not currently supported, only AudioPadType.Zeros, "
                     f"AudioPadType.Zeros_After, or AudioPadType.Repeat")

class ResizeSignal(Transform):
    "Crop (at a random start) or pad the signal to `duration` milliseconds, on every split"
    def __init__(self, duration:float, # target length (ms)
                 pad_mode=AudioPadType.Zeros):
        super().__init__()
        if pad_mode not in (AudioPadType.Zeros, AudioPadType.Zeros_After, AudioPadType.Repeat):
            raise ValueError(f"pad_mode {pad_mode} not currently supported, only AudioPadType.Zeros, "
                             f"AudioPadType.Zeros_After, or AudioPadType.Repeat")
        self.duration, self.pad_mode = duration, pad_mode

    def encodes(self, ai:AudioTensor)->AudioTensor:
        n, crop = ai.shape[-1], int((self.duration / 1000) * ai.sr)
        if n == crop: return ai
        if n < crop: return pad_to(ai, crop, self.pad_mode)
        start = random.randint(0, n - crop)
        return ai[..., start:start + crop]

def _shift(sig, s:int):
    "`sig` moved by `s` samples along its last dim (right if positive), zero-filled"
    if s == 0: return sig
    out = torch.zeros_like(sig)
    if s < 0: out[..., :s] = sig[..., -s:]
    else: out[..., s:] = sig[..., :-s]
    return out

def shift_signal(t:torch.Tensor, shift:int, roll:bool):
    "`t` shifted by `shift` along its last dim, wrapping around (`roll`) or zero-filled"
    return t.roll(shift, dims=-1) if roll else _shift(t, shift)

class SignalShifter(RandTransform):
    "Shift the signal (or spectrogram) by up to `max_pct` of its length, or `max_time` seconds; `direction` -1, 0 or 1"
    def __init__(self, p:float=0.5, max_pct:float=0.2, max_time:float|None=None, direction:int=0, roll:bool=False):
        if direction not in (-1, 0, 1): raise ValueError("Direction must be -1(left) 0(bidirectional) or 1(right)")
        self.max_pct, self.max_time, self.direction, self.roll = max_pct, max_time, direction, roll
        super().__init__(p=p)

    def before_call(self, b, split_idx):
        super().before_call(b, split_idx)
        self.shift_factor = random.uniform(-1, 1)
        if self.direction != 0: self.shift_factor = self.direction * abs(self.shift_factor)

    def encodes(self, ai:AudioTensor):
        s = self.shift_factor * (self.max_pct * ai.nsamples if self.max_time is None else self.max_time * ai.sr)
        return shift_signal(ai, int(s), self.roll)

    def encodes(self, sg:AudioSpectrogram):
        # as in fastaudio, `max_time` on a spectrogram counts `max_time * sr` frames
        s = self.shift_factor * (self.max_pct * sg.width if self.max_time is None else self.max_time * sg.sr)
        return shift_signal(sg, int(s), self.roll)

def _check_color(color):
    if not NoiseColor.valid(color): raise ValueError(f"color {color} is not valid: use a NoiseColor (-2 to 2)")

class AddNoise(RandTransform):
    "Add noise of `color` at `noise_level` times the clip's mean absolute value (one draw per call)"
    def __init__(self, noise_level:float=0.05, color:int=NoiseColor.White, p:float=0.5):
        _check_color(color)
        self.noise_level, self.color = noise_level, color
        super().__init__(p=p)

    def encodes(self, ai:AudioTensor)->AudioTensor:
        if self.color == NoiseColor.White: noise = torch.randn_like(ai.as_subclass(torch.Tensor))
        else: noise = F_.colored_noise((ai.shape[-1],), self.color, device=ai.device)  # the same for every channel
        return ai + noise * ai.abs().mean() * self.noise_level

class AddNoiseGPU(Transform):
    "Add noise of `color` per item at a level U(`min_level`, `max_level`) times the item's std (train and valid)"
    def __init__(self, p:float=1.0, min_level:float=0.0, max_level:float=0.05, color:int=NoiseColor.White):
        _check_color(color)
        self.p, self.min_level, self.max_level, self.color = p, min_level, max_level, color
        super().__init__()

    def _noise(self, x): return F_.add_noise_(x.clone(), self.color, self.min_level, self.max_level, self.p)
    @auto_batch(2)
    def encodes(self, ai:AudioTensor): return self._noise(ai)
    @auto_batch(3)
    def encodes(self, sg:AudioSpectrogram): return self._noise(sg)

class ChangeVolume(RandTransform):
    "Multiply the signal by a gain U(`lower`, `upper`) (one draw per call)"
    def __init__(self, p:float=0.5, lower:float=0.5, upper:float=1.5):
        self.lower, self.upper = lower, upper
        super().__init__(p=p)

    def before_call(self, b, split_idx):
        super().before_call(b, split_idx)
        self.gain = random.uniform(self.lower, self.upper)

    def encodes(self, ai:AudioTensor): return ai.apply_gain(self.gain)

class _PerItemGPU(Transform):
    """Base of the batch versions: `_draw` each item's change, flip each item's coin with probability `p` (after the
    draw, as fastaudio orders them), `_apply` the change where it came up"""
    @auto_batch(2)
    def encodes(self, ai:AudioTensor):
        drawn = self._draw(ai)
        return self._apply(ai, drawn, F_.random_mask([ai.size(0), 1, 1], self.p, device=ai.device))

class ChangeVolumeGPU(_PerItemGPU):
    "Multiply each item, with probability `p`, by its own gain U(`lower`, `upper`)"
    def __init__(self, p:float=0.5, lower:float=0.5, upper:float=1.5):
        self.p, self.lower, self.upper = p, lower, upper
        super().__init__()

    def _draw(self, ai): return torch.empty([ai.size(0), 1, 1], device=ai.device).uniform_(self.lower, self.upper)
    def _apply(self, ai, gains, on): return ai * torch.where(on, gains, torch.ones_like(gains))

class _OneDraw(RandTransform):
    "Base of `SignalCutout` and `SignalLoss`: one fraction U(0, `max_<name>_pct`) drawn per call into `<name>_pct`"
    def __init__(self, p:float, name:str, max_pct:float):
        self._name = name
        setattr(self, f'max_{name}_pct', max_pct)
        super().__init__(p=p)

    def before_call(self, b, split_idx):
        super().before_call(b, split_idx)
        setattr(self, f'{self._name}_pct', random.uniform(0, getattr(self, f'max_{self._name}_pct')))

class SignalCutout(_OneDraw):
    "Zero a run of U(0, `max_cut_pct`) of the signal at a random start (one draw per call)"
    def __init__(self, p:float=0.5, max_cut_pct:float=0.15): super().__init__(p, 'cut', max_cut_pct)
    def encodes(self, ai:AudioTensor): return ai.cutout(self.cut_pct)

class SignalLoss(_OneDraw):
    "Drop each sample time with probability U(0, `max_loss_pct`) (one draw per call)"
    def __init__(self, p:float=0.5, max_loss_pct:float=0.15): super().__init__(p, 'loss', max_loss_pct)
    def encodes(self, ai:AudioTensor): return ai.lose_signal(self.loss_pct)

class _ZeroGPU(_PerItemGPU):
    "Base of `SignalCutoutGPU` and `SignalLossGPU`: with probability `p` per item, zero the samples `_draw` picks"
    def __init__(self, p:float=0.5, min_cut_pct:float=0.0, max_cut_pct:float=0.15):
        self.p, self.min_cut_pct, self.max_cut_pct = p, min_cut_pct, max_cut_pct
        super().__init__()

    def _apply(self, ai, mask, on): return ai.masked_fill(mask & on, 0.)

class SignalCutoutGPU(_ZeroGPU):
    "Zero, with probability `p` per item, one run of U(`min_cut_pct`, `max_cut_pct`) of its samples (all channels)"
    def _draw(self, ai):
        n, _, s = ai.shape
        return F_.region_mask(n, s * self.min_cut_pct, s * self.max_cut_pct, s, device=ai.device).view(n, 1, s)

class SignalLossGPU(_ZeroGPU):
    "Zero, with probability `p` per item, a fraction U(`min_cut_pct`, `max_cut_pct`) of its samples, scattered"
    def _draw(self, ai):
        pcts = torch.empty([ai.size(0), 1, 1], device=ai.device).uniform_(self.min_cut_pct, self.max_cut_pct)
        return F_.random_mask(ai.shape, pcts, device=ai.device)

class DownmixMono(Transform):
    "Average the channels into one (items `[C,N]` and batches `[B,C,N]`)"
    def encodes(self, ai:AudioTensor)->AudioTensor:
        return type(ai)(ai.as_subclass(torch.Tensor).contiguous().mean(-2, keepdim=True), sr=ai.sr)
