"""Deploy a trained learner as one ONNX file: a waveform batch in, class probabilities out, with the whole inference
chain inside: crop/pad, waveform normalization, STFT, mel, dB or PCEN, the spectrogram normalization (its statistics
baked in as constants), the network and its activation. The serving side needs onnxruntime and numpy only
(`examples/serve_onnx.py`)."""
from __future__ import annotations
import copy, json, math, re, warnings
from pathlib import Path
import numpy as np, torch
from torch import nn
from fastai.data.transforms import ToTensor
import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
from .audio import AudioTensor, AudioNormalize, AudioCropPad, OpenAudio
from .spec import SpecConfig, MelSpec
from .cache import CachedSpec
from .norm import SpecNormalize, InstanceSpecNorm, ImageNetSpecNorm
from .freqnorm import FreqInstanceNorm, FreqBatchNorm, RelaxedFreqNorm
from .pcen import PCEN, PCENTransform, pcen_smoothing
from .utils import atomic_path
from .checks import check_positive
from . import __version__

__all__ = ['DeployChain', 'deploy_chain', 'to_onnx', 'onnx_metadata', 'PowerSTFT']

class CropPadWave(nn.Module):
    """`[B,N]` to `[B,n]` for any `N`, as `predict` does (`AudioCropPad` at validation): a longer clip keeps its centre
    (`(N - n)//2` samples dropped at the start), a shorter one gets zeros at the end (`pad='both'`: on both sides, the
    odd one at the end). One graph for every `N`: pad, then a slice whose start depends on `N`"""
    def __init__(self, n:int, pad:str='end'):
        super().__init__()
        self.n, self.pad = n, pad
    def forward(self, x):
        N, n = x.shape[-1], self.n
        if self.pad == 'end':
            return nn.functional.pad(x, (0, n)).narrow(-1, torch.sym_max(N - n, 0) // 2, n)
        start = n + torch.sym_max(N - n, 0) // 2 - torch.sym_max(n - N, 0) // 2
        return nn.functional.pad(x, (n, n)).narrow(-1, start, n)

class WaveNorm(nn.Module):
    "`AudioNormalize`: each clip to zero mean and unit std (population), a silent one (std <= eps) to zeros"
    def __init__(self, eps:float):
        super().__init__()
        self.eps = eps
    def forward(self, x):
        std, mean = torch.std_mean(x, (-2, -1), keepdim=True, correction=0)
        ok = std > self.eps
        return torch.where(ok, (x - mean) / torch.where(ok, std, torch.ones_like(std)), torch.zeros_like(x))

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

class Affine(nn.Module):
    "`(x - mean) / std` with constants: `SpecNormalize`, `GlobalSpecNorm`, `FreqSpecNorm`, `ConstantSpecNorm`"
    def __init__(self, mean:torch.Tensor, std:torch.Tensor):
        super().__init__()
        self.register_buffer('mean', mean.detach().float().cpu().clone())
        self.register_buffer('std', std.detach().float().cpu().clone())
    def forward(self, x): return (x - self.mean) / self.std

class ItemNorm(nn.Module):
    "`InstanceSpecNorm('item')`: each item by its own mean and std (population, floored at `eps`)"
    def __init__(self, eps:float):
        super().__init__()
        self.eps = eps
    def forward(self, x):
        std, mean = torch.std_mean(x, (1, 2, 3), keepdim=True, correction=0)
        return (x - mean) / std.clamp_min(self.eps)

class FreqItemNorm(nn.Module):
    "`freq_instance_norm`: IFN (`lam=0`, `InstanceSpecNorm('freq')`) or RFN, `lam LN + (1 - lam) IFN`"
    def __init__(self, lam:float, eps:float):
        super().__init__()
        self.lam, self.eps = lam, eps
    def forward(self, x):
        var, mean = torch.var_mean(x, (1, 3), keepdim=True, correction=0)
        ifn = (x - mean) * torch.rsqrt(var + self.eps)
        if self.lam == 0: return ifn
        var, mean = torch.var_mean(x, (1, 2, 3), keepdim=True, correction=0)
        return torch.lerp(ifn, (x - mean) * torch.rsqrt(var + self.eps), self.lam)

class ImageNetNorm(nn.Module):
    "`ImageNetSpecNorm`: each item min-max scaled to [0,1], then ImageNet's mean and std averaged over RGB"
    def __init__(self, eps:float):
        super().__init__()
        self.eps = eps
    def forward(self, x):
        lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
        return ((x - lo) / (hi - lo).clamp_min(self.eps) - ImageNetSpecNorm.mean) / ImageNetSpecNorm.std

_BLOCK = 48  # frames per block of the smoother's recurrence, as `fastnorm.pcen.ema_filter`: the same sums, in order

def _ema_consts(s:torch.Tensor, T:int)->tuple:
    "`ema_filter`'s block matrices for coefficients `s` (`[nb]`) and `T` frames: `KT` `[nb,L,L]`, `pw` `[nb,1,L+1]`"
    s3 = s.float().reshape(-1, 1, 1)
    a, L = 1 - s3, min(T, _BLOCK)
    ar = torch.arange(L + 1, dtype=torch.float32)
    d = ar[None, :L] - ar[:L, None]
    KT = torch.where(d >= 0, s3 * a ** d.clamp(min=0), torch.zeros(()))
    return KT, a ** ar

class PCENCore(nn.Module):
    """PCEN of a non-negative `[B,C,F,T]` batch with fixed parameters (numbers, or one per band), as
    `fastnorm.pcen.pcen` computes it at inference: the smoother is `ema_filter`'s block recurrence over the `T` frames,
    unrolled"""
    def __init__(self, T:int, s, gain, bias, power, eps:float):
        super().__init__()
        s = torch.as_tensor(s, dtype=torch.float32).reshape(-1)
        KT, pw = _ema_consts(s, T)
        self.register_buffer('KT', KT)
        self.register_buffer('pw', pw)
        self.per_band = s.numel() > 1
        self.T, self.eps = T, eps
        for k, v in (('gain', gain), ('bias', bias), ('power', power)):
            if self.per_band: self.register_buffer(k, torch.as_tensor(v, dtype=torch.float32).reshape(-1, 1).clone())
            else: setattr(self, k, float(v))
    def ema(self, x):
        "`M[t] = (1-s) M[t-1] + s x[t]`, `M[-1] = 1`"
        shape, T, nb = x.shape, x.shape[-1], self.KT.shape[0]
        x3 = x.reshape(-1, nb, T).transpose(0, 1)
        state = torch.ones_like(x3[..., :1])
        L, blocks = self.KT.shape[-1], []
        for t0 in range(0, T, L):
            n = min(L, T - t0)
            y = torch.baddbmm(torch.matmul(x3[..., t0:t0 + n], self.KT[:, :n, :n]), state, self.pw[..., 1:n + 1])
            blocks.append(y)
            state = y[..., n - 1:]
        return torch.cat(blocks, -1).transpose(0, 1).reshape(shape)
    def forward(self, S):
        if S.shape[-1] != self.T:
            raise ValueError(f"PCEN was exported for {self.T} frames, not {S.shape[-1]}")
        M = torch.exp(-self.gain * torch.log(self.ema(S) + self.eps)) * S
        b, p = self.bias, self.power
        if not self.per_band and p == 0: return torch.log1p(M)
        if not self.per_band and b == 0: return M ** p
        if not self.per_band and p == .5: return M / (torch.sqrt(M + b) + math.sqrt(b))
        return torch.expm1(torch.log1p(M / b) * p) * b ** p

class PCENStep(nn.Module):
    "`PCENTransform` on a `[B,C,F,T]` spectrogram of `cfg`: dB back to power, times `scale`, then PCEN"
    def __init__(self, tfm:PCENTransform, cfg:SpecConfig, T:int):
        super().__init__()
        s = pcen_smoothing(cfg.sr, cfg.hop_length, tfm.time_constant)
        self.db, self.div, self.scale = cfg.db, (20. if cfg.power == 1 else 10.), tfm.scale
        self.core = PCENCore(T, s, tfm.gain, tfm.bias, tfm.power, tfm.eps)
    def forward(self, x):
        S = torch.pow(10., x / self.div) if self.db else x
        return self.core(S * self.scale)

class PCENStem(nn.Module):
    "A `PCEN` model stem with its learned per-band parameters frozen, for export"
    def __init__(self, m:PCEN, T:int):
        super().__init__()
        self.from_db, self.scale = m.from_db, m.scale
        with torch.no_grad():
            self.core = PCENCore(T, m.s, m.gain, m.bias, m.power, m.eps)
    def forward(self, x):
        S = torch.pow(10., x / 10) if self.from_db else x
        if self.scale != 1: S = S * self.scale
        return self.core(S)

class DeployChain(nn.Module):
    """A learner's inference as one module: waveforms `[B,N]` (mono, float32, at the training rate, any `N`) to class
    probabilities `[B,n_classes]`. `N` is made the training length `n` as `predict` does: a longer clip is
    centre-cropped, a shorter one zero-padded at the end (`CropPadWave`)"""
    def __init__(self, crop:CropPadWave, wave:nn.Module|None, spec:nn.Module, steps:list, model:nn.Module, act,
                 meta:dict):
        super().__init__()
        self.crop, self.wave, self.spec, self.steps, self.model = crop, wave, spec, nn.Sequential(*steps), model
        self.act, self.meta = act, meta
    def forward(self, waveform):
        x = self.crop(waveform)[:, None]
        if self.wave is not None: x = self.wave(x)
        return self.act(self.model(self.steps(self.spec(x))))

def _loaded(learn):
    "A `Learner`, loaded (on the CPU) from `learn.export()`'s pickle when `learn` is a path"
    if not isinstance(learn, (str, Path)): return learn
    from fastai.learner import load_learner
    p = Path(learn)
    if not p.is_file(): raise FileNotFoundError(f"Learner file not found: {p} (save one with `learn.export()`)")
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return load_learner(p, cpu=True)

def _name(t)->str: return type(t).__name__

def _train_only(t)->bool: return getattr(t, 'split_idx', None) == 0  # RandTransforms that only run on the training set

def _reader(dl)->tuple:
    "(`OpenAudio` or None, `SpecCache` or None): how the learner's items become inputs; other type tfms are refused"
    fs = list(dl.dataset.tls[0].tfms.fs)
    k = next((i for i, f in enumerate(fs) if isinstance(f, (OpenAudio, CachedSpec))), None)
    if k is None:
        raise ValueError(f"to_onnx: the learner's inputs are made by {[_name(f) for f in fs]}, without OpenAudio "
                         "(AudioBlock) or a feature cache (SpecCacheBlock): it is not a fastnorm audio learner")
    after = [_name(f) for f in fs[k + 1:] if not _train_only(f)]
    if after: raise ValueError(f"to_onnx cannot export the input transform(s) {after} after {_name(fs[k])}")
    return (fs[k], None) if isinstance(fs[k], OpenAudio) else (None, fs[k].cache)

def _crop(dl, cache)->tuple:
    "(duration, pad) of the learner's crop/pad; an item transform it cannot export is an error"
    if cache is not None: return cache.duration, 'end'
    crops, other = [], []
    for t in dl.after_item.fs:
        if isinstance(t, AudioCropPad): crops.append(t)
        elif not isinstance(t, ToTensor) and not _train_only(t): other.append(_name(t))
    if other: raise ValueError(f"to_onnx cannot export the item transform(s) {other}")
    if not crops:
        raise ValueError("to_onnx needs a fixed clip length: the learner has no AudioCropPad "
                         "(AudioBlock(duration=...))")
    return crops[-1].duration, crops[-1].pad

def _step(t, cfg:SpecConfig, T:int)->nn.Module:
    "The module computing batch transform `t` on spectrograms; one it cannot export is an error naming it"
    if isinstance(t, SpecNormalize):
        if t.mean is None: raise ValueError(f"to_onnx: {_name(t)} has no statistics (build the DataLoaders first)")
        return Affine(t.mean, t.std)
    if isinstance(t, InstanceSpecNorm): return ItemNorm(t.eps) if t.per == 'item' else FreqItemNorm(0., t.eps)
    if isinstance(t, FreqInstanceNorm): return FreqItemNorm(t.lam, t.eps)
    if isinstance(t, ImageNetSpecNorm): return ImageNetNorm(t.eps)
    if isinstance(t, PCENTransform): return PCENStep(t, cfg, T)
    raise ValueError(f"to_onnx cannot export the batch transform {_name(t)} ({type(t).__module__}): it runs at "
                     "inference, and only fastnorm's normalizations, AudioNormalize and MelSpec are known")

def _batch_chain(dl, cache)->tuple:
    "(AudioNormalize or None, SpecConfig, spectrogram transforms, train-only names) of the learner's batch transforms"
    wave, cfg, spec_tfms, skipped = None, None if cache is None else cache.cfg, [], []
    if cache is not None and cache.wave_norm: wave = AudioNormalize()
    for t in dl.after_batch.fs:
        if _train_only(t): skipped.append(_name(t))
        elif isinstance(t, AudioNormalize) and cfg is None: wave = t
        elif isinstance(t, MelSpec) and cfg is None: cfg = t.cfg
        elif cfg is None: raise ValueError(f"to_onnx cannot export the waveform batch transform {_name(t)}")
        else: spec_tfms.append(t)
    if cfg is None: raise ValueError("to_onnx: the learner makes no spectrogram (no MelSpec and no feature cache)")
    return wave, cfg, spec_tfms, skipped

class FreqBNStem(nn.Module):
    "A `FreqBatchNorm` stem (eval mode: its running statistics) on plain tensors, for export"
    def __init__(self, m:FreqBatchNorm):
        super().__init__()
        self.bn = m.bn
    def forward(self, x):
        B, C, F, T = x.shape
        return self.bn(x.reshape(B, C * F, T)).reshape(B, C, F, T)

def _exportable(sub:nn.Module, T:int)->nn.Module|None:
    "The exportable stand-in for a fastnorm layer (they take `TensorSpec`s, which the exporter cannot trace), or None"
    if isinstance(sub, PCEN): return PCENStem(sub, T)
    if isinstance(sub, FreqBatchNorm): return FreqBNStem(sub)
    if isinstance(sub, RelaxedFreqNorm): return FreqItemNorm(sub.lam, sub.eps)
    return None

def _freeze_model(model:nn.Module, T:int)->nn.Module:
    "A CPU, float32, eval-mode copy of `model` with fastnorm's layers replaced by their exportable stand-ins"
    m = copy.deepcopy(model).cpu().float().eval()
    for name, sub in list(m.named_modules()):
        new = _exportable(sub, T)
        if new is None: continue
        if not name: return new.eval()
        parent, _, leaf = name.rpartition('.')
        setattr(m.get_submodule(parent) if parent else m, leaf, new)
    return m

def deploy_chain(learn, # a `Learner`, or the path of its `learn.export()` pickle
                 act=None, # the activation turning outputs into probabilities; default: the loss function's
                )->DeployChain:
    """The learner's inference as one `DeployChain` (waveforms `[B,N]` to probabilities), its constants taken from the
    learner: what `to_onnx` exports. A transform it cannot reproduce is an error naming it"""
    learn = _loaded(learn)
    dl = learn.dls.valid
    opener, cache = _reader(dl)
    if opener is not None and not opener.mono:
        raise ValueError("to_onnx exports mono learners (a waveform `[B,N]` in): this one reads its audio with "
                         "OpenAudio(mono=False)")
    duration, pad = _crop(dl, cache)
    wave, cfg, spec_tfms, skipped = _batch_chain(dl, cache)
    n = int(round(duration * cfg.sr))
    spec = Spectrogram(cfg, n)
    T = spec.stft.T  # frames of every spectrogram
    steps = [_step(t, cfg, T) for t in spec_tfms]
    if act is None: act = getattr(learn.loss_func, 'activation', None)
    if act is None:
        raise ValueError(f"to_onnx: the loss function {_name(learn.loss_func)} has no `activation` to give "
                         "probabilities: pass `act` (e.g. `partial(torch.softmax, dim=-1)`)")
    meta = dict(vocab=json.dumps([str(v) for v in learn.dls.vocab]), spec_config=json.dumps(cfg.to_dict()),
                fastnorm_version=__version__, sample_rate=str(cfg.sr), duration=repr(float(duration)), n_samples=str(n),
                crop_pad=(f"a clip of N samples is made {n}: N > {n} keeps the centre, samples (N-{n})//2 .. "
                          f"(N-{n})//2+{n}-1; N < {n} gets {n}-N zeros " +
                          ('at the end' if pad == 'end' else 'split over both ends, the odd one at the end')),
                wave_norm=json.dumps(wave is not None),
                chain=json.dumps(['CropPadWave'] + (['AudioNormalize'] if wave is not None else []) + ['MelSpec'] +
                                 [_name(t) for t in spec_tfms] + [_name(learn.model), 'activation']),
                train_only_skipped=json.dumps(skipped),
                input='waveform: float32 [batch, samples], mono, at sample_rate',
                output='probabilities: float32 [batch, len(vocab)]', **getattr(learn, 'deploy_meta', {}))
    return DeployChain(CropPadWave(n, pad), None if wave is None else WaveNorm(wave.eps), spec, steps,
                       _freeze_model(learn.model, T), act, meta).eval()

def _check_clips(n:int, sr:int)->list:
    "Test clips for `to_onnx`'s check: a noisy tone shorter than, as long as and longer than the training length"
    rng = np.random.default_rng(0)
    out = []
    for k, m in enumerate((max(1, n // 2), n, n + n // 2 + 1)):
        t = np.arange(m) / sr
        out.append((0.3 * np.sin(2 * np.pi * (200 + 300 * k) * t) + 0.05 * rng.standard_normal(m)).astype(np.float32))
    return out

def _check(learn, proto_bytes:bytes, chain:DeployChain, atol:float):
    "onnxruntime's probabilities against `get_preds`' on the learner's own pipeline, before anything is written"
    import onnxruntime as ort
    sr, n = int(chain.meta['sample_rate']), int(chain.meta['n_samples'])
    sess = ort.InferenceSession(proto_bytes, providers=['CPUExecutionProvider'])
    clips = _check_clips(n, sr)
    got = np.concatenate([sess.run(None, {'waveform': c[None]})[0] for c in clips])
    items = [AudioTensor(torch.from_numpy(c)[None], sr=sr) for c in clips]
    with learn.no_bar(): want = learn.get_preds(dl=learn.dls.test_dl(items, bs=len(items)))[0].numpy()
    err = float(np.abs(got - want).max())
    if not err <= atol:
        raise RuntimeError(f"to_onnx: the exported model's probabilities differ from the learner's by {err:.2e} "
                           f"(more than atol={atol:g}) on test clips; nothing was written")

def _cause(e:Exception)->str:
    "The first line of what made the exporter fail (its own report puts it under 'Exception summary')"
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', l).strip() for l in str(e).splitlines()]
    if 'Exception summary' in ' '.join(lines):
        k = next(i for i, l in enumerate(lines) if 'Exception summary' in l)
        return next((l for l in lines[k + 1:] if l), type(e).__name__)[:500]
    return f"{type(e).__name__}: {next((l for l in lines if l), '')}"[:500]

def _need_deploy_extra(check:bool):
    "Fail early, saying what to install, when the exporter's (or the check's) packages are missing"
    import importlib.util
    need = ('onnx', 'onnxscript') + (('onnxruntime',) if check else ())
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"to_onnx needs {', '.join(missing)}: pip install 'fastnorm[deploy]' "
                          "(onnx, onnxscript and onnxruntime)")

def to_onnx(learn, # a `Learner`, or the path of its `learn.export()` pickle
            path, # the `.onnx` file to write
            opset:int|None=None, # ONNX opset; default: the exporter's
            check:bool=True, # before writing: onnxruntime's probabilities must match `get_preds`' within `atol`
            atol:float=1e-4, # the check's tolerance (absolute, on probabilities)
            act=None, # the activation giving probabilities; default: the loss function's (softmax for cross-entropy)
           )->Path:
    """Export the learner's whole inference to one ONNX file: input `waveform`, float32 `[B,N]`, mono, at the training
    sample rate, any `B` and `N`; output `probabilities` `[B,n_classes]`. Each clip is made the training length `n` as
    `predict` does: longer (`N > n`) is centre-cropped to samples `(N-n)//2 .. (N-n)//2+n-1`, shorter is zero-padded at
    the end (both ends, the odd zero at the end, for `AudioCropPad(pad='both')`). The model's `metadata_props` hold
    `vocab` (JSON list, in output order), `spec_config` (JSON), `sample_rate`, `duration`, `n_samples`, `crop_pad`,
    `wave_norm`, `chain` and `fastnorm_version`. What cannot be exported is an error naming it, and nothing is written
    unless the export (and the check) succeeded"""
    _need_deploy_extra(check)
    check_positive('atol', atol)
    learn = _loaded(learn)
    path = Path(path)
    chain = deploy_chain(learn, act)
    n = int(chain.meta['n_samples'])
    example = torch.from_numpy(np.stack(_check_clips(n, chain.spec.cfg.sr)[2:] * 2))  # [2, N]: no 0/1 specialization
    dims = {'waveform': {0: torch.export.Dim('batch'), 1: torch.export.Dim('samples')}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')
            prog = torch.onnx.export(chain, (example,), dynamo=True, opset_version=opset, dynamic_shapes=dims,
                                     input_names=['waveform'], output_names=['probabilities'], verbose=False)
    except Exception as e:
        raise RuntimeError(f"to_onnx could not export {_name(learn.model)} with torch {torch.__version__}'s "
                           f"exporter: {_cause(e)}") from e
    proto = prog.model_proto
    for k, v in chain.meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    if check: _check(learn, data, chain, atol)
    with atomic_path(path) as tmp: tmp.write_bytes(data)
    return path

def onnx_metadata(path)->dict:
    "The `metadata_props` of an ONNX file as a dict, `vocab`, `spec_config` and the other JSON values decoded"
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    out = {p.key: p.value for p in m.metadata_props}
    for k in ('vocab', 'spec_config', 'wave_norm', 'chain', 'train_only_skipped'):
        if k in out: out[k] = json.loads(out[k])
    for k, f in (('sample_rate', int), ('n_samples', int), ('duration', float)):
        if k in out: out[k] = f(out[k])
    return out
