"fastaudio's `AudioBlock`, folder preprocessing and `AudioConfig`: spectrogram settings with torchaudio 0.8's defaults."
from __future__ import annotations
import inspect
from dataclasses import make_dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from fasttransform import Pipeline
from fastai.data.block import TransformBlock
from fastai.data.transforms import IntToFloatTensor
from fastcore.meta import delegates
from ..augment.preprocess import Resample
from ..augment.signal import DownmixMono, ResizeSignal
from .frontend import Spectrogram, MelSpectrogram, MFCC
from .signal import AudioTensor, get_audio_files

__all__ = ['audio_item_tfms', 'PreprocessAudio', 'preprocess_audio_folder', 'AudioBlock', 'config_from_func',
           'AudioConfig']

def audio_item_tfms(sample_rate:int|None=16000, # resample to this rate; None keeps each file's rate
                    force_mono:bool=True, # average the channels into one
                    crop_signal_to:float|None=None, # crop/pad to this many ms
                   ):
    "The basic audio item transforms: `Resample`, `DownmixMono`, `ResizeSignal`"
    tfms = []
    if sample_rate is not None: tfms.append(Resample(sample_rate))
    if force_mono: tfms.append(DownmixMono())
    if crop_signal_to is not None: tfms.append(ResizeSignal(duration=crop_signal_to))
    return tfms

class PreprocessAudio:
    "Load a file as an `AudioTensor` and run `audio_item_tfms` on it (a callable, not a `Transform`)"
    @delegates(audio_item_tfms)
    def __init__(self, **kwargs): self.tfms = Pipeline(audio_item_tfms(**kwargs))
    def __call__(self, x): return self.tfms(AudioTensor.create(x))

@delegates(audio_item_tfms)
def preprocess_audio_folder(path, folders=None, output_dir=None, **kwargs):
    "Preprocess the audio files of `path` into `output_dir` (default: `path`_cached), keeping relative paths"
    path = Path(path)
    fnames = get_audio_files(path, recurse=True, folders=folders)
    output_dir = Path(output_dir if output_dir is not None else path.parent/f'{path.name}_cached')
    output_dir.mkdir(exist_ok=True)
    pp = PreprocessAudio(**kwargs)
    for f in fnames:
        out = output_dir/f.relative_to(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        pp(f).save(out)
    return output_dir

class AudioBlock(TransformBlock):
    "A `TransformBlock` for audio files: load, then resample / downmix / crop as item transforms"
    @delegates(audio_item_tfms)
    def __init__(self, cache_folder=None, **kwargs):
        super().__init__(type_tfms=partial(AudioTensor.create, cache_folder=cache_folder),
                         item_tfms=audio_item_tfms(**kwargs), batch_tfms=IntToFloatTensor)

    @classmethod
    @delegates(audio_item_tfms)
    def from_folder(cls, path, **kwargs):
        "An `AudioBlock` reading the files of `path` preprocessed once by `preprocess_audio_folder`"
        return cls(preprocess_audio_folder(path, **kwargs), **kwargs)

def config_from_func(func, name:str, **kwargs):
    "A dataclass named `name` whose fields are `func`'s parameters with their defaults, overridden by `kwargs`"
    ns = {k: p.default for k, p in inspect.signature(func).parameters.items()}
    ns.update(kwargs)
    cls = make_dataclass(name, [(k, Any, field(default=v) if not isinstance(v, (dict, list)) else
                                 field(default_factory=partial(type(v), v))) for k, v in ns.items()])
    cls.__doc__ = ''
    return cls

class AudioConfig:
    "Spectrogram configurations for `AudioToSpec.from_cfg` / `AudioToMFCC.from_cfg`, with torchaudio 0.8's defaults"
    BasicSpectrogram = config_from_func(Spectrogram, 'BasicSpectrogram', mel=False, to_db=True)
    BasicMelSpectrogram = config_from_func(MelSpectrogram, 'BasicMelSpectrogram', mel=True, to_db=True)
    BasicMFCC = config_from_func(MFCC, 'BasicMFCC ')
    # fastaudio's voice preset; its `mel` and `to_db` are the strings "True" and "False", so both are on (kept as is)
    Voice = config_from_func(MelSpectrogram, 'Voice', mel='True', to_db='False', f_min=50.0, f_max=8000.0, n_fft=1024,
                             n_mels=128, hop_length=128)
