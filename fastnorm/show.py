"`show_batch` for audio DataLoaders: spectrograms (or waveforms) in a grid with their labels."
from fastai.imports import dispatch
from fastai.data.core import get_show_batch_func
from fastai.vision.data import get_grid
from .audio import AudioTensor
from .spec import TensorSpec

__all__ = []  # registers `show_batch` overloads with fastai's dispatcher; nothing to import by name

@dispatch
def show_batch(x:TensorSpec, y, samples, ctxs=None, max_n=9, nrows=None, ncols=None, figsize=None, **kwargs):
    "Spectrograms in a grid, each titled with its label"
    if ctxs is None: ctxs = get_grid(min(len(samples), max_n), nrows=nrows, ncols=ncols, figsize=figsize)
    return get_show_batch_func(object)(x, y, samples, ctxs=ctxs, max_n=max_n, **kwargs)

@dispatch
def show_batch(x:AudioTensor, y, samples, ctxs=None, max_n=9, nrows=None, ncols=None, figsize=None, **kwargs):
    "Waveforms in a grid, each titled with its label"
    if ctxs is None: ctxs = get_grid(min(len(samples), max_n), nrows=nrows, ncols=ncols, figsize=figsize)
    return get_show_batch_func(object)(x, y, samples, ctxs=ctxs, max_n=max_n, **kwargs)
