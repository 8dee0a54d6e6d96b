"""Spectrogram images as the AVMNIST recipe renders them with matplotlib, for a whole padded batch at once.

The recipe draws each clip with `specgram(y, NFFT=256, Fs=sr, noverlap=128, cmap='gray_r')` on a 1.12 x 1.12 inch
figure at 100 dpi and keeps the 112 x 112 pixels. Here, on a batch `[B,C,N]` of clips with `lengths`:

1. `specgram_db`: matplotlib's one-sided PSD in dB (`mlab.specgram`: symmetric Hann window, frames from sample 0 with
   no padding, |X|² / (sr Σw²), doubled except at DC and Nyquist), floored at `top_db` below each item's peak;
2. `resize_frames`: each clip's own frames stretched (or squeezed) to the image width, as the figure stretches the
   clip over its axes: linear interpolation, widened to a triangle filter when shrinking (antialiased); `resize_rows`
   does the same for the 129 frequency bins and the image height;
3. `db_to_image`: min-max per item to `uint8` with `gray_r`: pixel = round(255 · (max - dB) / (max - min)), so the
   loudest point is 0 (black) and the quietest 255 (white), with row 0 the highest frequency (low frequencies at the
   bottom).

Pixel-exact equality with matplotlib is not the aim (its image resampling differs in detail); the geometry,
orientation and grey levels are the recipe's."""
from __future__ import annotations
import functools
import torch

__all__ = ['frame_counts', 'frame_range', 'specgram_db', 'resize_weights', 'resize_frames', 'resize_rows',
           'db_to_level', 'level_to_image', 'db_to_image']

def frame_counts(lengths:torch.Tensor, # `[B]` samples of each clip
                 n_fft:int=256, # window (samples)
                 hop:int=128, # hop (samples): n_fft - noverlap
                )->torch.Tensor:
    "`[B]` frames of `specgram_db` wholly inside each clip (at least 1: a shorter clip is zero-padded to `n_fft`)"
    return ((torch.as_tensor(lengths) - n_fft).div(hop, rounding_mode='floor') + 1).clamp(min=1)

def specgram_db(x:torch.Tensor, # `[B,C,N]` audio, any device
                sr:int, # sample rate (Hz): sets matplotlib's PSD scale (a constant offset in dB)
                n_fft:int=256, # NFFT
                hop:int=128, # NFFT - noverlap
                top_db:float|None=120., # floor each item at its peak - `top_db` (digital silence would give -inf)
               )->torch.Tensor:
    "`[B,C,n_fft//2+1,T]` float32 PSD in dB/Hz as `matplotlib.mlab.specgram` makes it; frame t starts at sample t·hop"
    x = x.as_subclass(torch.Tensor).float()
    if x.shape[-1] < n_fft: x = torch.nn.functional.pad(x, (0, n_fft - x.shape[-1]))
    w = torch.hann_window(n_fft, periodic=False, dtype=torch.float64, device=x.device)  # numpy's np.hanning
    spec = torch.fft.rfft(x.unfold(-1, n_fft, hop) * w.float(), dim=-1)  # `[B,C,T,F]`
    p = spec.real.square_().add_(spec.imag.square())  # |X|², contiguous `[B,C,T,F]`
    one_sided = torch.full((n_fft // 2 + 1,), 2.0, dtype=torch.float64, device=x.device)
    one_sided[0] = 1.
    if n_fft % 2 == 0: one_sided[-1] = 1.
    offset = (10 * torch.log10(one_sided / (sr * w.pow(2).sum()))).float()  # the PSD's scale, in dB per bin
    db = p.clamp_(min=1e-30).log10_().mul_(10).add_(offset).transpose(-1, -2)  # `[B,C,F,T]`
    if top_db is not None: db = torch.maximum(db, db.amax((-3, -2, -1), keepdim=True) - top_db)
    return db

def frame_range(db:torch.Tensor, # `[B,C,F,T]` dB (padded)
                n_frames:torch.Tensor, # `[B]` real frames of each item
                top_db:float|None=None, # raise the minimum to at least the maximum - `top_db`
               )->tuple:
    "`[B]` minimum and maximum of each item's real frames: matplotlib's colour limits for the item"
    pad = torch.arange(db.shape[-1], device=db.device) >= n_frames.to(db.device)[:, None]
    inf = torch.zeros(pad.shape, device=db.device).masked_fill_(pad, float('inf'))[:, None, None, :]  # +inf on padding
    d = db.as_subclass(torch.Tensor)
    lo, hi = (d + inf).amin((1, 2, 3)), (d - inf).amax((1, 2, 3))
    return (lo if top_db is None else torch.maximum(lo, hi - top_db)), hi

def resize_weights(n_in:torch.Tensor, # `[B]` inputs each item really has (the rest is padding)
                   n_out:int, # outputs
                   size:int|None=None, # the padded input length (default: the largest of `n_in`)
                  )->torch.Tensor:
    """`[B,size,n_out]` weights taking each item's first `n_in` values to `n_out`: output j sits at input position
    (j + 0.5)·n_in/n_out - 0.5 and weighs its neighbours by a triangle as wide as max(1, n_in/n_out) each side"""
    n_in = torch.as_tensor(n_in)
    size = int(n_in.max()) if size is None else size
    m = n_in.float()[:, None, None]
    s = m / n_out
    c = ((torch.arange(n_out, dtype=torch.float32, device=n_in.device) + 0.5) * s - 0.5).clamp_(min=0)  # `[B,1,n_out]`
    c = torch.minimum(c, m - 1)  # the edges hold, as in a figure's extent
    t = torch.arange(size, dtype=torch.float32, device=n_in.device)[None, :, None]
    w = (1 - (t - c).abs_() / s.clamp(min=1)).clamp_(min=0) * (t < m)
    return w / w.sum(1, keepdim=True)

def resize_frames(x:torch.Tensor, # `[B,C,F,T]` (padded) spectrograms
                  n_frames:torch.Tensor, # `[B]` real frames of each item
                  width:int, # frames out
                 )->torch.Tensor:
    "`[B,C,F,width]`: each item's own `n_frames` stretched or squeezed to `width` columns"
    w = resize_weights(n_frames.to(x.device), width, x.shape[-1])
    return torch.matmul(x.as_subclass(torch.Tensor), w[:, None])  # `[B,C,F,T] @ [B,1,T,W]`

def resize_rows(x:torch.Tensor, # `[B,C,F,T]` spectrograms
                height:int, # rows out
               )->torch.Tensor:
    "`[B,C,height,T]`: the F rows resampled to `height` (the same weights as `resize_frames`)"
    return torch.matmul(_row_weights(x.shape[-2], height, x.device), x.as_subclass(torch.Tensor))  # `[H,F] @ [B,C,F,T]`

@functools.lru_cache(maxsize=16)
def _row_weights(n_in, n_out, device):
    return resize_weights(torch.tensor([n_in], device=device), n_out)[0].t().contiguous()

def db_to_level(db:torch.Tensor, # `[B,C,H,W]` dB
                lo:torch.Tensor|None=None, # `[B]` dB that maps to 0 (white) (default: each item's minimum)
                hi:torch.Tensor|None=None, # `[B]` dB that maps to 255 (black) (default: each item's maximum)
               )->torch.Tensor:
    "`[B,C,H,W]` float grey levels 255 · (dB - lo) / (hi - lo), clipped to [0, 255]; 0 everywhere for a constant item"
    db = db.as_subclass(torch.Tensor).float()
    per_item = lambda v: torch.as_tensor(v, device=db.device).float().reshape(-1, 1, 1, 1)
    lo = db.amin((-3, -2, -1), keepdim=True) if lo is None else per_item(lo)
    hi = db.amax((-3, -2, -1), keepdim=True) if hi is None else per_item(hi)
    scale = torch.where(hi > lo, 255 / (hi - lo).clamp(min=1e-12), 0.)
    return (db - lo).mul_(scale).clamp_(0, 255)

def level_to_image(level:torch.Tensor, # `[B,C,H,W]` grey levels, 0 (quiet) to 255 (loud), rows from low to high freq.
                  )->torch.Tensor:
    "`[B,C,H,W]` uint8 `gray_r` pixels 255 - level (loud is dark), rows flipped so row 0 is the highest frequency"
    return torch.sub(255, level.as_subclass(torch.Tensor)).round_().to(torch.uint8).flip(-2)

def db_to_image(db:torch.Tensor, # `[B,C,H,W]` dB, rows from low to high frequency
                lo:torch.Tensor|None=None, # `[B]` dB that maps to white (default: each item's minimum)
                hi:torch.Tensor|None=None, # `[B]` dB that maps to black (default: each item's maximum)
               )->torch.Tensor:
    "`[B,C,H,W]` uint8 `gray_r` images: 255 · (hi - dB) / (hi - lo) per item, clipped, row 0 the highest frequency"
    return level_to_image(db_to_level(db, lo, hi))
