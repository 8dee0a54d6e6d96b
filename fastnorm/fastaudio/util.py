"fastaudio's test helpers: a sine-wave `AudioTensor`, `apply_transform` and the `auto_batch` decorator."
from __future__ import annotations
from functools import wraps
from math import pi
import torch
from fastai.vision.augment import RandTransform
from .core.signal import AudioTensor

__all__ = ['test_audio_tensor']

def create_sin_wave(seconds:float=5, sr:int=16000, freq:float=400):
    "A `freq` Hz sine of `seconds` at `sr`, and `sr`"
    return torch.sin(torch.arange(int(round(seconds * sr)), dtype=torch.float) * (2 * pi * freq / sr)), sr

def test_audio_tensor(seconds:float=2, sr:int=16000, channels:int=1):
    "A 400 Hz sine `AudioTensor` `[channels, seconds*sr]` for tests"
    wave, sr = create_sin_wave(seconds=seconds, sr=sr)
    return AudioTensor(wave.repeat(channels, 1), sr)
test_audio_tensor.__test__ = False  # a helper, not a test, for pytest

def apply_transform(transform, inp):
    "`(copy of inp, transform(copy of inp))`, as the training set sees it for random transforms"
    x = inp.clone()
    out = transform(x, split_idx=0) if isinstance(transform, RandTransform) else transform(x)
    return inp.clone(), out

def auto_batch(item_dims:int):
    "Decorate a batch `encodes`: an item (`item_dims` dims) goes through as a batch of one"
    def wrapper(f):
        @wraps(f)
        def _inner(self, x):
            if x.dim() != item_dims: return f(self, x)
            return f(self, x.unsqueeze(0)).squeeze(0)
        return _inner
    return wrapper
