"""`MelSpec` for export: the one step whose exported formulation is not the one training runs. Training computes the
STFT with `torch.stft` (`fastnorm.dsp.stft`); onnxruntime's STFT operator is slow (slowest for sizes that are not powers
of 2), so the exported chain computes the same `|STFT|²` as a four-step FFT in matrix products (`PowerSTFT`), and
`Spectrogram` adds the mel filterbank and dB as `fastnorm.dsp` does. `tests/test_deploy.py` holds both to
`fastnorm.dsp` and `MelSpec`."""
from __future__ import annotations
import math
import torch
from torch import nn
from .spec import SpecConfig, MelSpec

__all__ = ['PowerSTFT', 'Spectrogram']

def _split(n:int)->tuple:
    "`(N1, N2)`, `N1 * N2 = n`, `N1 <= N2` as close to `sqrt(n)` as the divisors of `n` allow"
    n1 = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n1, n // n1

class PowerSTFT(nn.Module):
    """`|STFT|²` of `[M,L]` signals of a fixed length `L` (already padded), periodic Hann window, as
    `fastnorm.dsp.stft`: a four-step FFT in matrix products (`n_fft = N1 N2`: DFTs of size N1, twiddles, DFTs of size
    N2), about `2 (N1 + N2) / n_fft` of a direct DFT's work and fast in onnxruntime (whose STFT operator is slow,
    slowest for sizes that are not powers of 2). Returns `[M,T,J]`: bin `order[j]` in column `j`,
    `order[j] >= n_fft//2+1` unused"""
    def __init__(self, n_fft:int, hop_length:int, win_length:int|None, L:int):
        super().__init__()
        n1, n2 = _split(n_fft)
        K = n_fft // 2 + 1
        k2n = -(-K // n1)  # the k2 = 0..k2n-1 columns hold every bin k = k1 + n1 k2 < K
        T = 1 + (L - n_fft) // hop_length
        self.n1, self.n2, self.k2n, self.T = n1, n2, k2n, T
        a1, a2 = torch.arange(n1, dtype=torch.float64), torch.arange(n2, dtype=torch.float64)
        self.hop, self.chunks = hop_length, (n_fft // hop_length if n_fft % hop_length == 0 else None)
        if self.chunks is None:  # frame t's sample n2 t1 + t2 at [t, t2, t1], gathered (slower than slicing chunks)
            idx = (torch.arange(T)[:, None, None] * hop_length + n2 * torch.arange(n1)[None, None]
                   + torch.arange(n2)[:, None])
            self.register_buffer('idx', idx.reshape(-1))
        wl = win_length or n_fft
        win = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - wl) // 2  # as torch.stft centres a shorter window
        win[left:left + wl] = torch.hann_window(wl, periodic=True, dtype=torch.float64)
        self.register_buffer('win', win.reshape(n1, n2).T.float().contiguous())  # [t2, t1]
        th1 = 2 * math.pi * ((a1[:, None] * a1[None]) % n1) / n1  # [t1, k1]
        self.register_buffer('dft1', torch.cat([torch.cos(th1), -torch.sin(th1)], 1).float())  # [t1, 2 N1]
        phi = 2 * math.pi * ((a2[:, None] * a1[None]) % n_fft) / n_fft  # twiddles [t2, k1]
        self.register_buffer('tw_c', torch.cos(phi).float())
        self.register_buffer('tw_s', torch.sin(phi).float())
        th2 = 2 * math.pi * ((a2[:, None] * a2[None, :k2n]) % n2) / n2  # [t2, k2]
        c, sn = torch.cos(th2), torch.sin(th2)
        dft2 = torch.cat([torch.cat([c, -sn], 1), torch.cat([sn, c], 1)])  # [2 N2, 2 k2n]: (re | im) in and out
        self.register_buffer('dft2', dft2.float())
        j = torch.arange(n1 * k2n)
        self.register_buffer('order', (j // k2n) + n1 * (j % k2n))
    def frames(self, x):
        "`[M,L]` to frames `[M,T,N2,N1]`: frame t's sample `n2 t1 + t2` at `[t, t2, t1]` (size-N1 DFTs on the right)"
        M, T, n1, n2 = x.shape[0], self.T, self.n1, self.n2
        if self.chunks is None: return x.index_select(1, self.idx).reshape(M, T, n2, n1)
        R, h = self.chunks, self.hop  # hop divides n_fft: frame t is chunks t .. t+R-1 of `hop` samples
        L = (T + R - 1) * h
        x = x[:, :L] if x.shape[1] >= L else nn.functional.pad(x, (0, L - x.shape[1]))
        c = x.reshape(M, T + R - 1, h)
        f = torch.cat([c[:, r:r + T] for r in range(R)], -1) if R > 1 else c
        return f.reshape(M, T, n1, n2).transpose(-1, -2)
    def forward(self, x):
        M = x.shape[0]
        f = self.frames(x) * self.win
        a = torch.matmul(f, self.dft1)  # [M, T, t2, k1 re | k1 im]
        are, aim = a[..., :self.n1], a[..., self.n1:]
        bre, bim = are * self.tw_c + aim * self.tw_s, aim * self.tw_c - are * self.tw_s
        z = torch.matmul(torch.cat([bre, bim], -2).transpose(-1, -2), self.dft2)  # [M, T, k1, k2 re | k2 im]
        zre, zim = z[..., :self.k2n], z[..., self.k2n:]
        return (zre * zre + zim * zim).reshape(M, self.T, -1)

class Spectrogram(nn.Module):
    """`MelSpec(cfg=cfg)` on clips of `n` samples: `[B,C,n]` waveforms to `[B,C,F,T]` power, mel and dB spectrograms as
    `fastnorm.dsp` makes them; the STFT is `PowerSTFT`, its bins' order folded into the mel filterbank"""
    def __init__(self, cfg:SpecConfig, n:int):
        super().__init__()
        self.cfg, self.n = cfg, n
        L = max(n, cfg.n_fft) + (2 * (cfg.n_fft // 2) if cfg.center else 0)
        self.stft = PowerSTFT(cfg.n_fft, cfg.hop_length, cfg.win_length, L)
        K, order = cfg.n_fft // 2 + 1, self.stft.order
        fb = MelSpec(cfg=cfg).mel_fb()
        if fb is not None:  # the filterbank's rows in the STFT's column order, zero for the unused columns
            self.register_buffer('mel', torch.where((order < K)[:, None], fb[order.clamp(max=K - 1)], 0.))
    def forward(self, x):
        c = self.cfg
        if x.shape[-1] != self.n: raise ValueError(f"Spectrogram was made for {self.n} samples, not {x.shape[-1]}")
        if self.n < c.n_fft: x = nn.functional.pad(x, (0, c.n_fft - self.n))  # as `MelSpec`
        lead, flat = x.shape[:-1], x.reshape(-1, x.shape[-1])
        if c.center: flat = nn.functional.pad(flat[:, None], (c.n_fft // 2, c.n_fft // 2), mode='reflect')[:, 0]
        s = self.stft(flat)  # [M, T, J]
        if c.power == 1.: s = s.sqrt()
        if c.n_mels: s = torch.matmul(s, self.mel).transpose(-1, -2)  # [M, F, T]
        else:  # column k1 k2n + k2 holds bin k1 + n1 k2: the bins in order are the transposed columns
            st = self.stft
            s = s.reshape(-1, st.T, st.n1, st.k2n).permute(0, 3, 2, 1).reshape(-1, st.n1 * st.k2n, st.T)
            s = s[:, :c.n_fft // 2 + 1]
        s = s.reshape(*lead, *s.shape[-2:])
        if not c.db: return s
        db = (20. / c.power) * torch.log10(s.clamp(min=1e-10))
        if c.top_db is None: return db
        return torch.maximum(db, db.amax((1, 2, 3), keepdim=True) - c.top_db)
