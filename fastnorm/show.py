"""`show_batch` for audio DataLoaders (spectrograms or waveforms in a grid with their labels) and `plot_top_losses` for
spectrograms, registered with fastai's dispatcher."""
import math
from fastai.imports import dispatch
from fastai.data.core import get_show_batch_func
from fastai.vision.data import get_grid
from fastai.torch_core import TensorCategory
from .audio import AudioTensor
from .spec import TensorSpec

__all__ = []  # registers `show_batch`/`plot_top_losses` overloads with fastai's dispatcher; nothing to import by name

def _grid(x, y, samples, ctxs, max_n, nrows, ncols, figsize, **kwargs):
    "fastai's default `show_batch` into a grid of axes, laid out so colorbars, titles and axis labels don't collide"
    n = min(len(samples), max_n)
    if ctxs is None:
        if figsize is None: figsize = (4.2*min(n, ncols or 3), 3*math.ceil(n/(ncols or 3)))
        ctxs = get_grid(n, nrows=nrows, ncols=ncols, figsize=figsize)
        new = True
    else: new = False
    ctxs = get_show_batch_func(object)(x, y, samples, ctxs=ctxs, max_n=max_n, **kwargs)
    if new and len(ctxs): ctxs[0].figure.tight_layout()
    return ctxs

@dispatch
def show_batch(x:TensorSpec, y, samples, ctxs=None, max_n=9, nrows=None, ncols=None, figsize=None, **kwargs):
    "Spectrograms in a grid, each titled with its label"
    return _grid(x, y, samples, ctxs, max_n, nrows, ncols, figsize, **kwargs)

@dispatch
def show_batch(x:AudioTensor, y, samples, ctxs=None, max_n=9, nrows=None, ncols=None, figsize=None, **kwargs):
    "Waveforms in a grid, each titled with its label"
    return _grid(x, y, samples, ctxs, max_n, nrows, ncols, figsize, **kwargs)

@dispatch
def plot_top_losses(x:TensorSpec, y:TensorCategory, samples, outs, raws, losses, nrows=None, ncols=None, figsize=None,
                    **kwargs):
    """`ClassificationInterpretation.plot_top_losses` on spectrograms: each with its time (s) and Hz axes, titled as
    fastai titles images, prediction/actual / loss / probability of the prediction"""
    n = len(samples)
    cols = ncols or min(n, 3)
    if figsize is None: figsize = (4.2*cols, 3.2*math.ceil(n/cols))
    axs = get_grid(n, nrows=nrows, ncols=cols, figsize=figsize, title='Prediction/Actual/Loss/Probability')
    for ax, s, o, r, l in zip(axs, samples, outs, raws, losses):
        s[0].show(ctx=ax, **kwargs)
        ax.set_title(f'{o[0]}/{s[1]} / {l.item():.2f} / {r.max().item():.2f}')
    if len(axs): axs[0].figure.tight_layout()
    return axs
