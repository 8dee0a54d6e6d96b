"fastaudio's batch helpers: random region masks, SpecAugment masking along an axis, colored noise."
from __future__ import annotations
import torch

__all__ = ['region_mask', 'mask_along_axis_', 'random_mask', 'NoiseColor', 'colored_noise', 'add_noise_']

def region_mask(n:int, # masks to make
                min_mask_size:float, # shortest region (samples/bins), inclusive
                max_mask_size:float, # longest region
                maskable_length:int, # length of each mask
                device=None):
    "`[n, maskable_length]` bool: one region of random size in [min, max] at a random start per row (float edges)"
    sizes = torch.rand([n, 1], device=device) * (max_mask_size - min_mask_size) + min_mask_size
    starts = torch.rand([n, 1], device=device) * (maskable_length - sizes)
    idx = torch.arange(0, maskable_length, device=device)
    return (starts <= idx) & (idx < starts + sizes)

def mask_along_axis_(specgrams:torch.Tensor, # `[B,C,F,T]`
                     num_masks:int, # regions per item (may overlap)
                     min_size:float, max_size:float, # region size range
                     mask_val:float|None=None, # fill value; None: the mean of the masked area, per item and channel
                     axis:int=2, # 2: frequency, 3: time
                    )->torch.Tensor:
    "SpecAugment masks along `axis`, the same for all channels of an item; returns a new tensor"
    x = specgrams.transpose(axis, -1) if axis != 3 else specgrams
    n, a = x.shape[0], x.shape[-1]
    masks = region_mask(num_masks * n, min_size, max_size, a, device=x.device)
    masks = masks.view(num_masks, n, a).amax(dim=0).view(n, 1, 1, a)
    if mask_val is not None: out = x.masked_fill(masks, mask_val)
    else:
        # the mean of the masked area (so the item's mean stays), per item and channel
        vals = x.mul(masks).sum((-2, -1)) / (masks.sum((-2, -1)) * x.shape[-2])
        out = torch.where(masks, vals[..., None, None], x)
    return out if axis == 3 else out.transpose(axis, -1)

def random_mask(shape, p, device=None)->torch.Tensor:
    "Bool tensor of `shape`, each entry True with probability `p` (a float or a broadcastable tensor)"
    return torch.rand(shape, device=device) <= p

class NoiseColor:
    "Exponent β of noise with power spectrum ∝ 1/f^β"
    Violet, Blue, White, Pink, Brown = -2, -1, 0, 1, 2
    @staticmethod
    def valid(value)->bool: return value in range(-2, 3)

def colored_noise(shape, # `(..., N)`: the last dim is time
                  exponent:float, # β: power ∝ 1/f^β (`NoiseColor`)
                  fmin:float=0, # low-frequency cutoff (cycles per sample), at least 1/N
                  device=None)->torch.Tensor:
    "Gaussian 1/f^β noise of unit variance (Timmer & König 1995): a random spectrum shaped by f^(-β/2), inverse FFT"
    if exponent is NoiseColor.White: return torch.randn(shape, device=device)
    n = shape[-1]
    f = torch.fft.rfftfreq(n, device=device).clamp(min=max(fmin, 1. / n))
    scale = f ** (-exponent / 2.)
    w = scale[1:].clone()
    w[-1] *= (1 + n % 2) / 2.  # the Nyquist bin of an even length is real
    sigma = 2 * w.pow(2).sum().sqrt() / n  # the output's expected std
    re = torch.randn((*shape[:-1], f.numel()), device=device) * scale
    im = torch.randn((*shape[:-1], f.numel()), device=device) * scale
    im[..., 0] = 0
    if n % 2 == 0: im[..., -1] = 0
    return torch.fft.irfft(torch.complex(re, im), n=n) / sigma

def add_noise_(x:torch.Tensor, # a batch, items along dim 0
               color:int, min_level:float, max_level:float, # noise color; level range relative to each item's std
               p:float=1., # probability of noising each item
              )->torch.Tensor:
    "Add colored noise in place, per item: `level * std(item) * (noise - 0.5)` (fastaudio's offset of -0.5 kept)"
    n = x.size(0)
    levels = (random_mask([n], p, device=x.device) * x.reshape(n, -1).std(dim=1)
              * (torch.rand([n], device=x.device) * (max_level - min_level) + min_level))
    x += levels.reshape([n] + [1] * (x.dim() - 1)) * (colored_noise(x.shape, color, device=x.device) - 0.5)
    return x
