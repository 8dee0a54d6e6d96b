"""The normalization recipes `fastnorm compare` can train: what each does to the waveform, to the spectrogram batches
and to the model, and `apply_recipe`, which puts one into a run's DataLoaders."""
from __future__ import annotations
from pathlib import Path
from typing import NamedTuple
from torch import nn
from fastcore.foundation import L
from ..dlstats import compute_stats
from ..norm import add_spec_norm
from ..pcen import PCEN, PCENTransform
from ..freqnorm import FreqBatchNorm, FreqInstanceNorm, ConstantSpecNorm, FreqMixStyle
from .datasets import spec_cache
from .report import save_figure

__all__ = ['Recipe', 'RECIPES', 'PCEN_SCALE', 'apply_recipe']

class Recipe(NamedTuple):
    """One normalization of the comparison: waveform `AudioNormalize`?, a batch transform on the spectrogram, a model
    stem, a train-only augmentation"""
    wave:bool
    spec_norm:str|None = None  # batch transform: global, freq, instance, imagenet, ast, pcen, ifn, rfn
    stem:str|None = None  # model stem prepended to the network: 'fbn' (PANNs bn0), 'pcen' (trainable PCEN)
    aug:str|None = None   # train-only augmentation: 'mixstyle'
    doc:str = ''  # the legend of summary.md

# named like the type it holds; its keys are the words of `--norms` (the post's 'channel' among them)
RECIPES = {
    'none': Recipe(False, doc='raw log-mel'),
    'wave': Recipe(True, doc='per-clip waveform AudioNormalize only'),
    'global': Recipe(True, 'global', doc='AudioNormalize, then one mean/std of the training set'),
    'channel': Recipe(True, 'freq', doc='AudioNormalize, then one mean/std per mel bin of the training set'),
    'instance': Recipe(True, 'instance', doc="AudioNormalize, then each spectrogram by its own mean and std"),
    'imagenet': Recipe(False, 'imagenet',
                       doc="each spectrogram min-max scaled to [0,1] like an image, then ImageNet's mean and std"),
    'ast': Recipe(False, 'ast', doc='AST/BEATs: (x - mean) / (2 std), constants of the training set computed once'),
    'pcen': Recipe(False, 'pcen',
                   doc="PCEN with librosa's defaults in place of the log "
                       "(power x 2**31, as librosa's docs scale float audio)"),
    'pcen_learn': Recipe(False, stem='pcen',
                         doc='PCEN as a trainable model stem, one gain/bias/power/smoothing per mel bin'),
    'fbn': Recipe(False, stem='fbn', doc="PANNs' bn0: a learnable BatchNorm over mel bins as the model's stem"),
    'ifn': Recipe(False, 'ifn', doc='instance frequency-wise normalization: each item and mel bin over time'),
    'rfn': Recipe(False, 'rfn', doc='relaxed IFN, 0.5 LN + 0.5 IFN (Kim et al. 2022)'),
    'mixstyle': Recipe(False, 'ast', aug='mixstyle',
                       doc='the AST constants plus Freq-MixStyle (p 0.4, alpha 0.3) on the training batches'),
}
PCEN_SCALE = 2.**31  # librosa's docs: PCEN of float audio's spectrogram scaled as 32-bit integer audio

# the spectrogram normalizations fitted to the training set: the statistics' scope, and the stem of the files they are
# kept in (`stats_channel.*` keeps the CLI's word for the per-bin recipe)
_FITTED = {'global': ('global', 'stats_global'), 'freq': ('freq', 'stats_channel'), 'ast': ('global', 'stats_ast')}

def _insert(dls, *tfms):
    "Add batch transforms to every loader's `after_batch`, in order"
    for dl in dls.loaders:
        p = dl.after_batch  # a new list per loader (loaders made with `new` share the old one)
        p.fs = L(list(p.fs) + list(tfms)).sorted(key='order')

def _keep_stats(stats, out:Path, stem:str):
    """The statistics' plot and values in `out`, unless kept there already: every job of run 0 that fits them gets the
    same ones (`ast` and `mixstyle` share theirs; a resume builds run 0 again to evaluate it)"""
    if (out/f'{stem}.pt').exists():
        return
    save_figure(stats.plot(), out/f'{stem}.png')
    stats.save(out/f'{stem}.pt')

def _fitted_norm(dls, spec_norm:str, frac:float, seed:int, stats_dir:Path|None):
    "A normalization whose constants are the training set's statistics, computed on `frac` of its batches"
    scope, stem = _FITTED[spec_norm]
    # no process group exists while jobs run (`ranks`): each job's statistics are its own process's
    stats = compute_stats(dls.train, scope=scope, frac=frac, seed=seed, progress=False)
    if stats_dir is not None:
        _keep_stats(stats, stats_dir, stem)
    if spec_norm == 'ast':
        _insert(dls, ConstantSpecNorm.from_recipe('ast', stats).to(dls.device or 'cpu'))
    else:
        add_spec_norm(dls, norm=spec_norm, stats=stats)

def _spec_norm(dls, spec_norm:str|None, frac:float, seed:int, stats_dir:Path|None):
    "Add the batch transform `spec_norm` (see `Recipe`) to `dls`"
    if spec_norm in _FITTED:
        _fitted_norm(dls, spec_norm, frac, seed, stats_dir)
    elif spec_norm in ('instance', 'imagenet'):
        add_spec_norm(dls, norm=spec_norm)
    elif spec_norm == 'pcen':
        _insert(dls, PCENTransform(scale=PCEN_SCALE))
    elif spec_norm in ('ifn', 'rfn'):
        _insert(dls, FreqInstanceNorm(0. if spec_norm == 'ifn' else .5))

def _stem(stem:str|None, c)->nn.Module|None:
    "The model stem `stem` for spectrograms of `SpecConfig` `c`"
    if stem == 'fbn':
        return FreqBatchNorm(c.n_freq)
    if stem == 'pcen':
        return PCEN(c.n_freq, sr=c.sr, hop_length=c.hop_length, from_db=c.db, scale=PCEN_SCALE)
    return None

def apply_recipe(dls, # cached DataLoaders of one run (`make_dls`)
                 name:str, # a key of `RECIPES`
                 frac:float=1., # fraction of the training batches statistics are computed on
                 seed:int=0, # seeds the choice of those batches
                 stats_dir:Path|None=None, # keep the statistics' plot and values here (`stats_*.png`, `.pt`)
                )->nn.Module|None:
    "Insert recipe `name`'s batch transforms into `dls`; returns its model stem (or None)"
    recipe = RECIPES[name]
    _spec_norm(dls, recipe.spec_norm, frac, seed, stats_dir)
    if recipe.aug == 'mixstyle':
        _insert(dls, FreqMixStyle(p=.4, alpha=.3))
    return _stem(recipe.stem, spec_cache(dls.train).cfg)
