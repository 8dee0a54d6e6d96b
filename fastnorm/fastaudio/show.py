"`show_batch` for fastaudio's `AudioTensor`: fastnorm's waveform grid, without an audio player per item."
from fastai.imports import dispatch
from fastai.data.core import show_batch as _show_batch
from ..audio import AudioTensor as _FnAudioTensor
from .. import show as _fn_show  # noqa: F401  (fastnorm's show_batch for TensorSpec and AudioTensor)
from .core.signal import AudioTensor

__all__ = []

@dispatch
def show_batch(x:AudioTensor, y, samples, ctxs=None, max_n=6, nrows=None, ncols=None, figsize=None, **kwargs):
    "Waveforms in a grid, each titled with its label (`hear=False`: no player per item)"
    fn = _show_batch.invoke(_FnAudioTensor, object, object)
    return fn(x, y, samples, ctxs=ctxs, max_n=max_n, nrows=nrows, ncols=ncols, figsize=figsize, hear=False, **kwargs)
