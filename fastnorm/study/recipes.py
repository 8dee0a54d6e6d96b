"""The normalization recipes `fastnorm compare` can train: what each does to the waveform, to the spectrogram batches
and to the model, and `apply_recipe`, which puts one into a run's DataLoaders."""
from __future__ import annotations
from pathlib import Path
from functools import partial
from typing import Callable, NamedTuple
from torch import nn
from fastcore.foundation import L
from ..dlstats import compute_stats
from ..norm import add_spec_norm
from ..pcen import PCEN, PCENTransform
from ..freqnorm import FreqBatchNorm, FreqInstanceNorm, ConstantSpecNorm, FreqMixStyle
from ..devaug import DeviceAugment
from .datasets import spec_cache
from .report import save_figure

__all__ = ['Recipe', 'RECIPES', 'PCEN_SCALE', 'apply_recipe']

class Recipe(NamedTuple):
    """One normalization of the comparison: waveform `AudioNormalize`?, then what it adds, each a callable (or None):
    a batch transform on the spectrogram, a model stem, a train-only augmentation. `apply_recipe` calls them; a new
    recipe is its transform plus one entry of `RECIPES`"""
    wave:bool
    spec_norm:Callable|None = None  # (dls, fit) adds the batch transform; `fit(scope, stem)`: training-set statistics
    stem:Callable|None = None  # (SpecConfig) -> the model stem prepended to the network
    aug:Callable|None = None  # () -> a train-only batch augmentation, inserted after the normalization
    doc:str = ''  # the legend of summary.md
    def plus(self, aug:Callable, doc:str)->Recipe:
        "This recipe with the train-only augmentation `aug` (a factory of a batch transform) added: one `RECIPES` entry"
        return self._replace(aug=aug, doc=doc)

PCEN_SCALE = 2.**31  # librosa's docs: PCEN of float audio's spectrogram scaled as 32-bit integer audio

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

def _stats(dls, scope:str, stem:str, frac:float, seed:int, stats_dir:Path|None):
    "The training set's statistics of `scope`, computed on `frac` of its batches; kept as `stem.*` in `stats_dir`"
    # no process group exists while jobs run (`ranks`): each job's statistics are its own process's
    stats = compute_stats(dls.train, scope=scope, frac=frac, seed=seed, progress=False)
    if stats_dir is not None:
        _keep_stats(stats, stats_dir, stem)
    return stats

# the batch transforms of the recipes, as `Recipe.spec_norm`s: `fit(scope, stem)` gives the training set's statistics

def _add_spec_norm(norm:str, stem:str|None=None):
    """`add_spec_norm`'s `norm` (a key of `SPEC_NORMS`); with `stem`, from the training set's statistics of scope `norm`
    kept as `stem.*` (`stats_channel.*` keeps the CLI's word for the per-bin recipe)"""
    def add(dls, fit):
        add_spec_norm(dls, norm=norm, **({} if stem is None else dict(stats=fit(norm, stem))))
    return add

def _constants(recipe:str, stem:str):
    "`ConstantSpecNorm.from_recipe(recipe)` with the training set's global statistics, kept as `stem.*`"
    def add(dls, fit):
        _insert(dls, ConstantSpecNorm.from_recipe(recipe, fit('global', stem)).to(dls.device or 'cpu'))
    return add

def _batch_tfm(make:Callable):
    "A batch transform `make()` that needs no statistics"
    def add(dls, fit): _insert(dls, make())
    return add

def _pcen_stem(c)->nn.Module:
    "Trainable PCEN for spectrograms of `SpecConfig` `c`"
    return PCEN(c.n_freq, sr=c.sr, hop_length=c.hop_length, from_db=c.db, scale=PCEN_SCALE)

# named like the type it holds; its keys are the words of `--norms` (the post's 'channel' among them) and its order
# their order in `--help` and in the reports
RECIPES = {
    'none': Recipe(False, doc='raw log-mel'),
    'wave': Recipe(True, doc='per-clip waveform AudioNormalize only'),
    'global': Recipe(True, _add_spec_norm('global', 'stats_global'),
                     doc='AudioNormalize, then one mean/std of the training set'),
    'channel': Recipe(True, _add_spec_norm('freq', 'stats_channel'),
                      doc='AudioNormalize, then one mean/std per mel bin of the training set'),
    'instance': Recipe(True, _add_spec_norm('instance'),
                       doc="AudioNormalize, then each spectrogram by its own mean and std"),
    'imagenet': Recipe(False, _add_spec_norm('imagenet'),
                       doc="each spectrogram min-max scaled to [0,1] like an image, then ImageNet's mean and std"),
    'ast': Recipe(False, _constants('ast', 'stats_ast'),
                  doc='AST/BEATs: (x - mean) / (2 std), constants of the training set computed once'),
    'pcen': Recipe(False, _batch_tfm(partial(PCENTransform, scale=PCEN_SCALE)),
                   doc="PCEN with librosa's defaults in place of the log "
                       "(power x 2**31, as librosa's docs scale float audio)"),
    'pcen_learn': Recipe(False, stem=_pcen_stem,
                         doc='PCEN as a trainable model stem, one gain/bias/power/smoothing per mel bin'),
    'fbn': Recipe(False, stem=lambda c: FreqBatchNorm(c.n_freq),
                  doc="PANNs' bn0: a learnable BatchNorm over mel bins as the model's stem"),
    'ifn': Recipe(False, _batch_tfm(partial(FreqInstanceNorm, 0.)),
                  doc='instance frequency-wise normalization: each item and mel bin over time'),
    'rfn': Recipe(False, _batch_tfm(partial(FreqInstanceNorm, .5)),
                  doc='relaxed IFN, 0.5 LN + 0.5 IFN (Kim et al. 2022)'),
}
# a recipe with a train-only augmentation is one entry too: the `ast` recipe's constants (and statistics files) shared
RECIPES['mixstyle'] = RECIPES['ast'].plus(partial(FreqMixStyle, p=.4, alpha=.3),
                                          'the AST constants plus Freq-MixStyle (p 0.4, alpha 0.3) on the training '
                                          'batches')
RECIPES['channel+device'] = RECIPES['channel'].plus(DeviceAugment,
                                                    'channel, trained with DeviceAugment (random tilt, EQ, band limit '
                                                    'and f_max jitter of the log-mel) for devices it has not seen')

def apply_recipe(dls, # cached DataLoaders of one run (`make_dls`)
                 name:str, # a key of `RECIPES`
                 frac:float=1., # fraction of the training batches statistics are computed on
                 seed:int=0, # seeds the choice of those batches
                 stats_dir:Path|None=None, # keep the statistics' plot and values here (`stats_*.png`, `.pt`)
                )->nn.Module|None:
    "Insert recipe `name`'s batch transforms into `dls`; returns its model stem (or None)"
    recipe = RECIPES[name]
    if recipe.spec_norm is not None:
        recipe.spec_norm(dls, partial(_stats, dls, frac=frac, seed=seed, stats_dir=stats_dir))
    if recipe.aug is not None:
        _insert(dls, recipe.aug())
    return None if recipe.stem is None else recipe.stem(spec_cache(dls.train).cfg)
