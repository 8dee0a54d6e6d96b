"""fastaudio's `AudioSpectrogram`, `AudioToSpec`, `SpectrogramTransformer`, `AudioToMFCC`, on fastnorm's `TensorSpec`.

`AudioSpectrogram` is a fastnorm `TensorSpec` (so fastnorm's normalizers and SpecAugment apply to it) that also keeps
fastaudio's settings dict, readable as attributes (`sg.n_fft`, `sg.hop_length`, `sg.mel`, ...). Stock fastai
`Normalize` applies to it: this module registers `Normalize.encodes`/`decodes` for `AudioSpectrogram` (fastaudio's
spectrograms were skipped by `Normalize`, which only dispatches on `TensorImage`)."""
from __future__ import annotations
import inspect, warnings
from dataclasses import asdict, is_dataclass
from functools import partial
import torch
from torch import nn
from fasttransform import Transform
from fastai.data.transforms import Normalize
from fastcore.meta import delegates
from ...spec import SpecConfig, TensorSpec
from .. import show as _registers_show_batch  # noqa: F401  (show_batch for the fastaudio types)
from .frontend import Spectrogram, MelSpectrogram, AmplitudeToDB, MFCC
from .signal import AudioTensor

__all__ = ['AudioSpectrogram', 'show_spectrogram', 'AudioToSpec', 'SpectrogramTransformer', 'fill_pipeline',
           'get_usable_kwargs', 'warn_unused', 'AudioToMFCC']

def _spec_config(s:dict)->SpecConfig|None:
    "The `SpecConfig` equivalent of fastaudio settings `s`, or None where fastnorm's settings cannot say the same"
    g = s.get
    try:
        if g('pad', 0) or g('normalized', False) or not g('onesided', True): return None
        if g('pad_mode', 'reflect') != 'reflect': return None
        if g('power') not in (1., 2.) or g('sr') is None or 'n_fft' not in s: return None
        if g('mel') and g('sample_rate') != g('sr'): return None  # the filterbank was made for another rate
        if g('to_db') and (g('stype', 'power') == 'power') != (g('power') == 2.): return None
        return SpecConfig(sr=int(g('sr')), n_fft=g('n_fft'), hop_length=g('hop_length'), win_length=g('win_length'),
                          n_mels=g('n_mels') if g('mel') else None, f_min=g('f_min', 0.), f_max=g('f_max'),
                          power=g('power'), db=bool(g('to_db')), top_db=g('top_db') if g('to_db') else None,
                          center=g('center', True), mel_scale='htk', mel_norm=g('norm'))
    except (ValueError, TypeError): return None

class AudioSpectrogram(TensorSpec):
    "A spectrogram `[C,F,T]` (batch `[B,C,F,T]`) with fastaudio's settings as attributes; a fastnorm `TensorSpec`"
    @classmethod
    def create(cls, sg_tensor, settings:dict|None=None):
        "An `AudioSpectrogram` from a tensor and the settings that made it"
        return cls(sg_tensor, settings=settings, cfg=_spec_config(settings or {}))

    @property
    def duration(self):
        "Seconds covered: `hop_length * (width - 0.5) / sr` (approximate, as in fastaudio)"
        return (self.hop_length * (self.shape[-1] - 0.5)) / self.sr
    @property
    def width(self): return self.shape[-1]
    @property
    def height(self): return self.shape[-2]
    @property
    def nchannels(self): return self.shape[-3]

    def __getattr__(self, name):
        if not name.startswith('_'):
            settings = self.__dict__.get('settings') or {}
            if name in settings: return settings[name]
        raise AttributeError(f"{type(self).__name__} object has no attribute {name!r} (nor a setting of that name)")

    def show(self, ctx=None, ax=None, title:str='', **kwargs):
        "Show the spectrogram (first channel) with time and frequency axes"
        return show_spectrogram(self, ctx=ctx, ax=ax, title=title, **kwargs)

def show_spectrogram(sg, title:str='', ax=None, ctx=None, **kwargs):
    "Draw `sg` on `ax` (or `ctx`, or a new figure) through fastnorm's `TensorSpec.show`"
    ax = ax if ax is not None else ctx
    return TensorSpec.show(sg, ctx=ax, title=title or None, **kwargs)

# the fix for fastaudio's skipped normalization: fastai's own Normalize now dispatches on AudioSpectrogram as well
@Normalize
def encodes(self, x:AudioSpectrogram): return (x - self.mean) / self.std
@Normalize
def decodes(self, x:AudioSpectrogram): return x * self.std.to(x.device) + self.mean.to(x.device)

class AudioToSpec(Transform):
    "Transform: `AudioTensor` to `AudioSpectrogram` through `pipe` (an `nn.Sequential`), recording `settings`"
    def __init__(self, pipe, settings:dict):
        super().__init__()
        self.pipe, self.settings = pipe, settings

    @classmethod
    def from_cfg(cls, audio_cfg):
        "An `AudioToSpec` from an `AudioConfig` (or a dict with `mel` and `to_db`)"
        cfg = asdict(audio_cfg) if is_dataclass(audio_cfg) else dict(audio_cfg)
        return SpectrogramTransformer(mel=cfg.pop('mel'), to_db=cfg.pop('to_db'))(**cfg)

    def encodes(self, audio:AudioTensor):
        self.settings.update({'sr': audio.sr, 'nchannels': audio.shape[-2]})
        return AudioSpectrogram.create(self.pipe(audio.as_subclass(torch.Tensor)), settings=dict(self.settings))

def _transform_list(mel, to_db):
    return [MelSpectrogram if mel else Spectrogram] + ([AmplitudeToDB] if to_db else [])

def SpectrogramTransformer(mel=True, to_db=True):
    "A factory of `AudioToSpec` transforms taking the keyword arguments of (Mel)Spectrogram and AmplitudeToDB"
    tfms = _transform_list(mel, to_db)
    make = partial(fill_pipeline, sg_type={'mel': mel, 'to_db': to_db}, transform_list=tfms)
    params = {}
    for f in tfms: params.update({k: p for k, p in inspect.signature(f).parameters.items() if k not in params})
    make.__signature__ = inspect.Signature(list(params.values()))
    return make

def _override_bad_defaults(kwargs):
    "fastaudio's defaults: n_fft 1024, win_length n_fft, hop_length win_length//2"
    if kwargs.get('n_fft') is None: kwargs['n_fft'] = 1024
    if kwargs.get('win_length') is None: kwargs['win_length'] = kwargs['n_fft']
    if kwargs.get('hop_length') is None: kwargs['hop_length'] = int(kwargs['win_length'] / 2)
    return kwargs

def fill_pipeline(transform_list, sg_type, **kwargs):
    "Build each transform of `transform_list` from the `kwargs` it accepts; warn about the others"
    kwargs = _override_bad_defaults(dict(kwargs))
    mods, settings = [], {}
    for f in transform_list:
        usable = get_usable_kwargs(f, kwargs)
        mods.append(f(**usable))
        settings.update(usable)
    warn_unused(kwargs, settings)
    return AudioToSpec(nn.Sequential(*mods), settings={**sg_type, **settings})

def warn_unused(all_kwargs, used_kwargs):
    "Warn for each argument no transform took"
    for k in set(all_kwargs) - set(used_kwargs): warnings.warn(f"{k} is not a valid arg name and was not used")

def get_usable_kwargs(func, kwargs, exclude=None):
    "`func`'s parameters with their defaults, overridden by those in `kwargs`"
    exclude = exclude or []
    defaults = {k: v.default for k, v in inspect.signature(func).parameters.items() if k not in exclude}
    return {**defaults, **{k: v for k, v in kwargs.items() if k in defaults}}

@delegates(MFCC.__init__)
class AudioToMFCC(Transform):
    "Transform: `AudioTensor` to MFCCs as an `AudioSpectrogram`, with torchaudio 0.8's `MFCC` arguments"
    def __init__(self, **kwargs):
        super().__init__()
        self.settings = get_usable_kwargs(MFCC, kwargs, [])
        self.transformer = MFCC(**self.settings)

    @classmethod
    def from_cfg(cls, audio_cfg):
        "An `AudioToMFCC` from `AudioConfig.BasicMFCC` (or a dict)"
        return cls(**(asdict(audio_cfg) if is_dataclass(audio_cfg) else audio_cfg))

    def encodes(self, x:AudioTensor):
        settings = {'sr': x.sr, 'nchannels': x.shape[-2], **self.settings}
        return AudioSpectrogram.create(self.transformer(x.as_subclass(torch.Tensor)).detach(), settings=settings)
