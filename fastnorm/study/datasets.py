"""The comparison's data: `--data` ('synth', 'esc50' or a folder in ESC-50's or FSDD's layout) resolved and checked
before anything trains, and the cached DataLoaders of one run."""
from __future__ import annotations
from pathlib import Path
from typing import NamedTuple
import pandas as pd
from ..data import esc50
from ..layouts import LAYOUTS, detect_layout
from ..cache import CachedSpec
from ..augment import SpecAugment
from ..synth import synth_esc50

__all__ = ['DataSource', 'resolve_data', 'make_dls', 'spec_cache']

class DataSource(NamedTuple):
    """A resolved `--data`: its layout ('esc50' or 'fsdd'), the folder of its items, the items, the smallest training
    set's size among the splits, and the validation folds (ESC-50's layout; `(1,)` for FSDD's one split)"""
    layout:str
    path:Path
    items:pd.DataFrame
    n_train:int
    folds:tuple = (1,)
    @property
    def n_classes(self)->int:
        "The number of classes among the items (for the chance level)"
        return self.items[LAYOUTS[self.layout].label_col].nunique()

# the names `--data` takes besides a folder: each is a dataset in ESC-50's layout, made or downloaded on first use
_NAMED = {'synth': synth_esc50, 'esc50': esc50}

_TRAINS = tuple(k for k, l in LAYOUTS.items() if l.trains)  # the layouts the comparison trains on

def _locate(data:str)->tuple:
    "(layout, folder) of `--data`"
    if data in _NAMED:
        return 'esc50', _NAMED[data]()
    try:
        return detect_layout(data, allowed=_TRAINS, what='--data')
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (use 'synth', 'esc50' or a dataset folder)") from None

def _check_options(data:str, layout, folds, speaker, subset):
    "A fold other than 1, cross-validation, `--speaker` or `--subset` that the layout of `data` lacks is an error"
    if 'folds' not in layout.options and folds != (1,):
        many = 'all' if folds == 'all' else ','.join(map(str, folds))
        flag = f"--fold {folds[0]}" if len(folds) == 1 else f"--folds {many}"
        raise ValueError(f"{flag}: {data} is in {layout.title} layout, which has no folds: {layout.splits}")
    for opt, v, what in (('speaker', speaker, 'speakers'), ('subset', subset, 'subsets')):
        if v is not None and opt not in layout.options:
            has = ' or '.join(l.title for l in LAYOUTS.values() if opt in l.options)
            raise ValueError(f"--{opt} {v}: only a dataset in {has} layout has {what}")

def resolve_data(data:str, # 'synth', 'esc50' or a folder in ESC-50's or FSDD's layout
                 folds=1, # ESC-50's validation fold, or several (cross-validation), or 'all' (every fold)
                 speaker:str|None=None, # FSDD: the validation speaker (default: split by take)
                 subset:str|None=None, # ESC-50's layout: only the rows of this subset (e.g. 'esc10')
                )->DataSource:
    "`data` as a `DataSource`; a bad folder, fold, subset or speaker fails here, before training"
    name, path = _locate(data)
    layout = LAYOUTS[name]
    folds = (folds,) if isinstance(folds, int) else folds
    _check_options(data, layout, folds, speaker, subset)
    items = layout.items(path, subset)
    if folds == 'all':
        folds = tuple(layout.folds(items))
    # a missing fold or speaker is an error now
    n_train = min(layout.train_size(items, f, speaker) for f in folds)
    return DataSource(name, path, items, n_train, tuple(folds))

def make_dls(src:DataSource, cfg, wave_norm:bool, fold:int, progress:bool=True):
    """Cached, seeded DataLoaders for one job of `CompareConfig` `cfg`, validating on `fold` (spectrograms come from
    the feature cache, made once for all runs and folds)"""
    aug = [SpecAugment(policy=cfg.specaugment)] if cfg.specaugment else None
    kw = dict(bs=cfg.bs, spec=cfg.spec, wave_norm=wave_norm, batch_tfms=aug, cache=True, progress=progress)
    return LAYOUTS[src.layout].dls(src.path, fold=fold, speaker=cfg.speaker, subset=cfg.subset, **kw)

def spec_cache(dl):
    "The `SpecCache` a cached DataLoader reads"
    return next(f.cache for f in dl.dataset.tls[0].tfms.fs if isinstance(f, CachedSpec))
