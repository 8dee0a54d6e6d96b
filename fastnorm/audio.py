"""Audio core: `AudioTensor` with its sample rate, loading through soundfile, per-clip normalization, crop/pad and
`AudioBlock`."""
from __future__ import annotations
import struct
from pathlib import Path
import numpy as np, torch, soundfile as sf
from torch import nn
from fastai.torch_core import TensorBase, retain_type
from fastai.data.block import TransformBlock
from fastai.data.transforms import DisplayedTransform, Transform
from fastai.vision.augment import RandTransform
from fastcore.basics import store_attr
from .dsp import resample
from .checks import check_choice, check_int, check_number, check_positive
from .steps import plain

__all__ = ['KeepMeta', 'AudioLoadError', 'load_audio', 'AudioTensor', 'OpenAudio', 'AudioNormalize', 'AudioCropPad',
           'AudioBlock', 'AUDIO_EXTS']

AUDIO_EXTS = ('.wav', '.flac', '.ogg', '.aiff', '.aif')

class AudioLoadError(ValueError):
    "An audio file that exists but cannot be used: corrupt, empty, or holding NaN/Inf samples"

def _read_pcm16_wav(path:Path):
    """`([samples, channels] float32, rate)` of a plain 16-bit PCM WAV straight from its bytes, with soundfile's numbers
    (x / 32768) and without its per-file setup, which outweighs the reading on short clips such as FSDD's; None for
    any other file, known from its header, before its samples are read (soundfile then reads it once). A header this
    reader cannot follow (cut short, garbled, sizes past the end) is also None: soundfile decides, and says what is
    wrong"""
    with open(path, 'rb') as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b'RIFF' or head[8:12] != b'WAVE': return None
        fmt = None
        while len(chunk := f.read(8)) == 8:
            cid, size = chunk[:4], int.from_bytes(chunk[4:], 'little')
            if cid == b'fmt ':
                body = f.read(size + (size & 1))
                if fmt is not None or size < 16 or len(body) < size: return None  # cut short, or a second fmt
                fmt = struct.unpack('<HHIIHH', body[:16])  # tag, channels, rate, bytes/s, block align, bits
            elif cid == b'data':
                if (fmt is None or fmt[0] != 1 or fmt[5] != 16 or not 1 <= fmt[1] <= 1024 or fmt[4] != 2 * fmt[1]
                        or not 1 <= fmt[2] < 2**31 or size % (2 * fmt[1])): return None  # libsndfile's limits
                data = f.read(size)
                # truncated, empty, or chunks after the samples (soundfile reads those too, and may refuse the file)
                if len(data) < size or size == 0 or len(f.read(2)) > (size & 1): return None
                pcm = np.frombuffer(data, '<i2').reshape(-1, fmt[1])
                return pcm.astype(np.float32) / np.float32(32768), fmt[2]
            elif cid in (b'LIST', b'fact', b'cue ', b'PAD ', b'JUNK', b'bext', b'smpl', b'inst', b'id3 ', b'ID3 '):
                f.seek(size + (size & 1), 1)  # chunks are padded to an even size
            else: return None  # a chunk soundfile may read otherwise (or junk): it decides
    return None

def load_audio(path, # WAV, FLAC, OGG or AIFF file
               sr:int|None=None, # Resample to this rate (Hz); `None` keeps the file's rate
               mono:bool=True, # Downmix to one channel
              )->tuple[torch.Tensor,int]:
    "Load `path` as float32 `[channels, samples]` and its sample rate; errors name the file"
    path = Path(path)
    if not path.is_file(): raise FileNotFoundError(f"Audio file not found: {path}")
    if sr is not None: sr = check_int('sr', sr, lo=1)
    pcm = _read_pcm16_wav(path) if path.suffix.lower() == '.wav' else None
    try: data, file_sr = pcm if pcm is not None else sf.read(str(path), dtype='float32', always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, MemoryError) as e:
        raise AudioLoadError(f"Could not decode audio file {path}: {e}") from e
    if data.shape[0] == 0: raise AudioLoadError(f"Audio file {path} is empty: it holds 0 samples")
    x = torch.from_numpy(np.ascontiguousarray(data.T))
    if pcm is None and not torch.isfinite(x).all():  # integer PCM is always finite
        raise AudioLoadError(f"Audio file {path} contains {int((~torch.isfinite(x)).sum())} NaN or Inf samples")
    if mono and x.shape[0] > 1: x = x.mean(0, keepdim=True)
    if sr is not None and sr != file_sr: x, file_sr = resample(x, file_sr, sr), sr
    return x, int(file_sr)

class KeepMeta:
    "Mixin for `TensorBase` types: `clone` keeps the metadata (fastai's `clone` drops it)"
    def clone(self, *, memory_format=None):
        res = super().clone(memory_format=memory_format)
        res.__dict__.update(self.__dict__)
        return res

class AudioTensor(KeepMeta, TensorBase):
    "Waveform `[C,N]` (a batch: `[B,C,N]`), float32, carrying its sample rate `sr` through slicing and batching"
    @classmethod
    def create(cls, fn, sr:int|None=None, mono:bool=True, **kwargs):
        "Load a file (`str` or `Path`), or wrap an array/tensor, which then needs `sr`; keep an `AudioTensor` at `sr`"
        if isinstance(fn, (str, Path)): x, sr = load_audio(fn, sr=sr, mono=mono)
        elif isinstance(fn, AudioTensor):
            if sr is not None and getattr(fn, 'sr', None) != sr:
                raise ValueError(f"This AudioTensor has sr={getattr(fn, 'sr', None)} Hz, not {sr} Hz: "
                                 f"load the file with sr={sr}")
            return fn
        else:
            if sr is None: raise ValueError("`sr` is needed to make an AudioTensor from an array")
            x = torch.as_tensor(fn, dtype=torch.float32)
            if x.ndim == 1: x = x[None]
        return cls(x, sr=sr, **kwargs)

    @property
    def nsamples(self): return self.shape[-1]
    @property
    def duration(self): return self.shape[-1] / self.sr

    def show(self, ctx=None, title=None, figsize=(6,2), **kwargs):
        "Plot the waveform against time in seconds"
        import matplotlib.pyplot as plt
        if ctx is None: _, ctx = plt.subplots(figsize=figsize)
        x = self.detach().cpu().float()
        x = x.reshape(-1, x.shape[-1])
        t = np.arange(x.shape[-1]) / self.sr
        for c in range(x.shape[0]):
            ctx.plot(t, x[c].numpy(), lw=0.5, label=f'ch {c}' if x.shape[0] > 1 else None, **kwargs)
        ctx.set_xlim(0, t[-1] if len(t) else 1)
        ctx.set_xlabel('time (s)')
        ctx.set_ylabel('amplitude')
        if title is not None: ctx.set_title(title)
        return ctx

class OpenAudio(Transform):
    "Type transform of `AudioBlock`: an audio file (`str` or `Path`) to an `AudioTensor` at `sr` (`AudioTensor`s stay)"
    input_types = (str, Path, AudioTensor)  # what `test_dl` and `predict` accept (fastai reads `input_types`)
    def __init__(self, sr:int|None=16000, # resample to this rate (Hz)
                 mono:bool=True, # downmix to one channel
                ):
        store_attr()
    def encodes(self, fn:str|Path|AudioTensor)->AudioTensor: return AudioTensor.create(fn, sr=self.sr, mono=self.mono)

class WaveNorm(nn.Module):
    "`AudioNormalize`'s computation: each clip `[..., C, N]` to zero mean, unit std (population); a silent one to zeros"
    def __init__(self, eps:float=1e-8): # clips with std below `eps` are treated as silent
        super().__init__()
        self.eps = eps
    def forward(self, x):
        xf = plain(x).float()
        mean = xf.mean((-2,-1), keepdim=True)
        std = xf.std((-2,-1), keepdim=True, unbiased=False)
        ok = std > self.eps
        return torch.where(ok, (xf - mean) / torch.where(ok, std, torch.ones_like(std)), torch.zeros_like(xf))

class AudioNormalize(DisplayedTransform):
    "Per-clip waveform normalization to zero mean and unit std over channels and samples; a silent clip gives zeros"
    order = 1  # before the spectrogram transform
    def __init__(self, eps:float=1e-8): # clips with std below `eps` are treated as silent
        check_number('eps', eps, lo=0)
        store_attr()
    def to_module(self, cfg=None)->nn.Module: return WaveNorm(self.eps)
    def encodes(self, x:AudioTensor): return retain_type(self.to_module()(x), old=x)

class CropPadWave(nn.Module):
    """`AudioCropPad` at validation (and inference): `[..., N]` to `[..., n]` for any `N`: a longer clip keeps its
    centre (`(N - n)//2` samples dropped at the start), a shorter one gets zeros at the end (`pad='both'`: on both
    sides, the odd one at the end). One graph for every `N` once exported: a pad, then a slice whose start depends on
    `N`"""
    def __init__(self, n:int, # samples kept
                 pad:str='end'): # where short clips get their zeros: 'end' or 'both'
        super().__init__()
        self.n, self.pad = n, pad
    def forward(self, x):
        N, n = x.shape[-1], self.n
        if self.pad == 'end':
            return nn.functional.pad(x, (0, n)).narrow(-1, torch.sym_max(N - n, 0) // 2, n)
        start = n + torch.sym_max(N - n, 0) // 2 - torch.sym_max(n - N, 0) // 2
        return nn.functional.pad(x, (n, n)).narrow(-1, start, n)

class AudioCropPad(RandTransform):
    "Crop or zero-pad every clip to `duration` seconds: a random crop on the training set, a centred one on validation"
    split_idx, order = None, 20
    def __init__(self, duration:float, # target length in seconds
                 pad:str='end', # where short clips get their zeros: 'end' or 'both' (centred)
                ):
        check_positive('duration', duration)
        check_choice('pad', pad, ('end', 'both'))
        super().__init__(p=1.)
        store_attr()
    def before_call(self, b, split_idx): self.train = split_idx == 0
    def _module(self, sr:int)->CropPadWave: return CropPadWave(int(round(self.duration * sr)), self.pad)
    def to_module(self, cfg)->nn.Module:
        "The validation crop/pad for clips at `cfg.sr`"
        return self._module(cfg.sr)
    def encodes(self, x:AudioTensor):
        m = self._module(x.sr)
        n, cur = m.n, x.shape[-1]
        if self.train and cur > n:  # a random crop: training only
            start = int(torch.randint(0, cur - n + 1, ()))
            return x[..., start:start + n]
        return x if cur == n else retain_type(m(plain(x)), old=x)

def AudioBlock(sr:int|None=16000, # resample every clip to this rate (Hz)
               duration:float|None=None, # crop/pad every clip to this length (s) so batches collate
               mono:bool=True, # downmix to one channel
              ):
    "A `TransformBlock` for audio files: load with soundfile, resample, crop/pad to one length"
    return TransformBlock(type_tfms=OpenAudio(sr=sr, mono=mono), item_tfms=AudioCropPad(duration) if duration else None)
