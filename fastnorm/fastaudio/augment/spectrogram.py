"fastaudio's spectrogram augmentations: item versions and batch (`...GPU`) versions, on `AudioSpectrogram`."
from __future__ import annotations
import random, warnings
import torch
from torch.nn import functional as F
from fasttransform import Transform
from ...augment import span_mask
from ..core.signal import AudioTensor
from ..core.spectrogram import AudioSpectrogram
from ..util import auto_batch
from . import functional as F_
from .signal import AudioPadType, pad_to

__all__ = ['SpectrogramTransform', 'CropTime', 'MaskFreq', 'MaskTime', 'MaskFreqGPU', 'MaskTimeGPU', 'SGRoll',
           'compute_deltas', 'Delta', 'DeltaGPU', 'TfmResize', 'TfmResizeGPU']

class SpectrogramTransform(Transform):
    "Base of the spectrogram transforms: given an `AudioTensor` they warn and return it unchanged"
    def encodes(self, audio:AudioTensor)->AudioTensor:
        warnings.warn(f"You are trying to apply a {type(self).__name__} to an AudioTensor {tuple(audio.shape)}")
        return audio

class CropTime(SpectrogramTransform):
    "Crop (random start) or pad the spectrogram to `duration` ms: `int(sr*duration/(1000*hop_length)) + 1` frames"
    def __init__(self, duration:float, pad_mode=AudioPadType.Zeros):
        super().__init__()
        self.duration, self.pad_mode = duration, pad_mode

    def encodes(self, sg:AudioSpectrogram)->AudioSpectrogram:
        w_crop, w = int((sg.sr * self.duration) / (1000 * sg.hop_length)) + 1, sg.shape[-1]
        if w == w_crop: return sg
        if w < w_crop: return pad_to(sg, w_crop, self.pad_mode)
        start = random.randint(0, w - w_crop)
        return sg[..., start:start + w_crop]

def _mask_rows(sg, dim, num_masks, size, start, val):
    "Item masks: `num_masks` bands of `size` along `dim` (-2 or -1), the first at `start`, filled with `val`"
    n = sg.shape[dim]
    starts = []
    s = start if start is not None else random.randint(0, n - size)
    for _ in range(num_masks):
        if not 0 <= s <= n - size:
            raise ValueError(f"Start value '{s}' out of range for AudioSpectrogram of shape {tuple(sg.shape)}")
        starts.append(s)
        s = random.randint(0, n - size)
    mask = span_mask(n, torch.tensor([starts]), torch.full((1, num_masks), size))[0]  # fastnorm's SpecAugment mask
    mask = mask[:, None] if dim == -2 else mask[None, :]
    x = sg.as_subclass(torch.Tensor)
    fill = x.reshape(x.shape[0], -1).mean(-1)[:, None, None] if val is None else torch.tensor(float(val))
    return _retain(torch.where(mask.to(x.device), fill.to(x), x), sg)

def _retain(t, like):
    "`t` with the type and metadata of `like`"
    out = t.as_subclass(type(like))
    out.__dict__.update(like.__dict__)
    return out

class _MaskRows(SpectrogramTransform):
    "fastaudio's item masks along `axis` (-2: frequency, -1: time); the subclasses name the axis"
    axis = -2
    def __init__(self, num_masks:int=1, size:int=20, start:int|None=None, val:float|None=None):
        super().__init__()
        self.num_masks, self.size, self.start, self.val = num_masks, size, start, val

    def encodes(self, sg:AudioSpectrogram)->AudioSpectrogram:
        return _mask_rows(sg, self.axis, self.num_masks, self.size, self.start, self.val)

class MaskFreq(_MaskRows):
    "SpecAugment frequency masks on one `[C,F,T]`: `num_masks` bands of `size`, filled with `val` or the channel mean"
    axis = -2

class MaskTime(_MaskRows):
    "SpecAugment time masks on one `[C,F,T]`: `num_masks` spans of `size` frames, filled with `val` or the channel mean"
    axis = -1

class _MaskAxisGPU(SpectrogramTransform):
    "Batch SpecAugment masks along axis 2 (frequency) or 3 (time)"
    def __init__(self, axis:int, num_masks:int, min_size:float, max_size:float, mask_val:float|None):
        if axis not in (2, 3): raise ValueError("Can only mask the time or frequency axis (2 or 3)")
        self.axis, self.num_masks, self.mask_val = axis, num_masks, mask_val
        self.min_size, self.max_size = min_size, max_size
        super().__init__()

    @auto_batch(3)
    def encodes(self, sg:AudioSpectrogram):
        return F_.mask_along_axis_(sg, num_masks=self.num_masks, min_size=self.min_size, max_size=self.max_size,
                                   mask_val=self.mask_val, axis=self.axis)

class MaskFreqGPU(_MaskAxisGPU):
    "SpecAugment frequency masks per item of a batch; `mask_val=None` fills with the mean of the masked area"
    def __init__(self, num_masks:int=1, min_size:float=1, max_size:float=10, mask_val:float|None=None):
        super().__init__(2, num_masks, min_size, max_size, mask_val)

class MaskTimeGPU(_MaskAxisGPU):
    "SpecAugment time masks per item of a batch; `mask_val=None` fills with the mean of the masked area"
    def __init__(self, num_masks:int=1, min_size:float=1, max_size:float=10, mask_val:float|None=None):
        super().__init__(3, num_masks, min_size, max_size, mask_val)

class SGRoll(SpectrogramTransform):
    "Roll the spectrogram along time by up to `max_shift_pct` of its width; `direction` -1, 0 (either) or 1"
    def __init__(self, max_shift_pct:float=0.5, direction:int=0):
        if int(direction) not in (-1, 0, 1): raise ValueError("Direction must be -1(left) 0(bidirectional) or 1(right)")
        super().__init__()
        self.max_shift_pct, self.direction = max_shift_pct, direction

    def encodes(self, sg:AudioSpectrogram)->AudioSpectrogram:
        direction = random.choice([-1, 1]) if self.direction == 0 else self.direction
        return sg.roll(int(sg.shape[-1] * random.random() * self.max_shift_pct * direction), dims=-1)

def compute_deltas(x:torch.Tensor, # `[..., F, T]`
                   win_length:int=5, # odd window (frames), at least 3
                   mode:str='replicate', # padding of the ends
                  )->torch.Tensor:
    "Deltas along time, as torchaudio's `compute_deltas`: `Σ n (x[t+n] - x[t-n]) / (2 Σ n²)`, n = 1..(win-1)//2"
    if win_length < 3: raise ValueError(f"`win_length` must be at least 3 ({win_length} given)")
    n = (win_length - 1) // 2
    flat = x.reshape(-1, 1, x.shape[-1]).as_subclass(torch.Tensor)
    k = torch.arange(-n, n + 1, dtype=flat.dtype, device=flat.device)[None, None] / (n * (n + 1) * (2 * n + 1) / 3)
    return F.conv1d(F.pad(flat, (n, n), mode=mode), k).reshape(x.shape)

class Delta(SpectrogramTransform):
    "Each channel followed by its first and second deltas (librosa's `feature.delta`: Savitzky-Golay, width `width`)"
    def __init__(self, width:int=9):
        super().__init__()
        self.width = width

    def encodes(self, sg:AudioSpectrogram):
        from scipy.signal import savgol_filter
        if sg.shape[-1] < self.width:
            raise ValueError(f"Delta not possible with current settings, inputs must be wider than {self.width} "
                             f"columns ({sg.shape[-1]} given)")
        x = sg.detach().cpu().numpy()
        d = [torch.from_numpy(savgol_filter(x, self.width, deriv=o, polyorder=o, axis=-1, mode='interp'))
             for o in (1, 2)]
        out = torch.stack([sg.as_subclass(torch.Tensor), d[0].to(sg), d[1].to(sg)], dim=-3)  # [C,3,F,T]
        return _retain(out.reshape(-1, *sg.shape[-2:]), sg)

class DeltaGPU(SpectrogramTransform):
    "Add the first and second deltas (`compute_deltas`) as channels: `[B,C,F,T]` to `[B,3C,F,T]`"
    def __init__(self, width:int=9, mode:str='replicate'):
        super().__init__()
        self.width, self.mode = width, mode

    @auto_batch(3)
    def encodes(self, sg:AudioSpectrogram):
        d1 = compute_deltas(sg, self.width, self.mode)
        d2 = compute_deltas(d1, self.width, self.mode)
        return _retain(torch.cat([sg.as_subclass(torch.Tensor), d1, d2], dim=1).contiguous(), sg)

class TfmResize(SpectrogramTransform):
    "Resize one spectrogram `[C,F,T]` to `size` (an int: square) by interpolation"
    def __init__(self, size, interp_mode:str='bilinear'):
        super().__init__()
        self.size, self.interp_mode = size, interp_mode

    def encodes(self, sg:AudioSpectrogram)->AudioSpectrogram:
        size = (self.size, self.size) if isinstance(self.size, int) else self.size
        x = sg.as_subclass(torch.Tensor).unsqueeze(0)
        return _retain(F.interpolate(x, size=size, mode=self.interp_mode, align_corners=False).squeeze(0), sg)

class TfmResizeGPU(SpectrogramTransform):
    "Resize a batch of spectrograms `[B,C,F,T]` to `size` (an int: square) by interpolation"
    def __init__(self, size, interp_mode:str='bilinear'):
        super().__init__()
        self.size = (size, size) if isinstance(size, int) else size
        self.interp_mode = interp_mode

    @auto_batch(3)
    def encodes(self, sg:AudioSpectrogram):
        x = sg.as_subclass(torch.Tensor)
        return _retain(F.interpolate(x, size=self.size, mode=self.interp_mode, align_corners=False), sg)
