"""The comparison's data: `--data` ('synth', 'esc50' or a folder in ESC-50's or FSDD's layout) resolved and checked
before anything trains, and the cached DataLoaders of one run."""
from __future__ import annotations
from pathlib import Path
from typing import NamedTuple
import pandas as pd
from ..data import (detect_layout, read_esc50_csv, esc50_dls, esc50, fsdd_items, fsdd_dls, CrossValidationSplitter,
                    FSDDSplitter, FSDD_TEST_TAKES)
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
        return self.items['category' if self.layout == 'esc50' else 'label'].nunique()

# the names `--data` takes besides a folder: each is a dataset in ESC-50's layout, made or downloaded on first use
_NAMED = {'synth': synth_esc50, 'esc50': esc50}

def _locate(data:str)->tuple:
    "(layout, folder) of `--data`"
    if data in _NAMED:
        return 'esc50', _NAMED[data]()
    try:
        return detect_layout(data, allowed=('esc50', 'fsdd'), what='--data')
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (use 'synth', 'esc50' or a dataset folder)") from None

def _no_folds(data:str, folds):
    "FSDD's layout is split by take or speaker: a fold other than 1, or cross-validation, is an error"
    takes = f"{FSDD_TEST_TAKES[0]}-{FSDD_TEST_TAKES[-1]}"
    flag = f"--fold {folds[0]}" if len(folds) == 1 else f"--folds {','.join(map(str, folds))}"
    raise ValueError(f"{flag}: {data} is in FSDD's layout, which has no folds: "
                     f"it is split by take (takes {takes} validate) or by --speaker")

def resolve_data(data:str, # 'synth', 'esc50' or a folder in ESC-50's or FSDD's layout
                 folds=1, # ESC-50's validation fold, or several (cross-validation), or 'all' (every fold)
                 speaker:str|None=None, # FSDD: the validation speaker (default: split by take)
                 subset:str|None=None, # ESC-50's layout: only the rows of this subset (e.g. 'esc10')
                )->DataSource:
    "`data` as a `DataSource`; a bad folder, fold, subset or speaker fails here, before training"
    layout, path = _locate(data)
    folds = (folds,) if isinstance(folds, int) else folds
    if layout == 'fsdd' and folds != (1,):
        _no_folds(data, folds)
    if layout == 'esc50' and speaker is not None:
        raise ValueError(f"--speaker {speaker}: only a dataset in FSDD's layout has speakers")
    if layout == 'fsdd' and subset is not None:
        raise ValueError(f"--subset {subset}: only a dataset in ESC-50's layout has subsets")
    if layout == 'fsdd':
        items = fsdd_items(path)
        train, _ = FSDDSplitter('take' if speaker is None else 'speaker', test_speaker=speaker)(items)  # checks it
        return DataSource(layout, path, items, len(train))
    items = read_esc50_csv(path, subset)
    if folds == 'all':
        folds = tuple(sorted(int(f) for f in items['fold'].unique()))
    # a missing fold is an error now
    n_train = min(len(CrossValidationSplitter(f)(items)[0]) for f in folds)
    return DataSource(layout, path, items, n_train, tuple(folds))

def make_dls(src:DataSource, cfg, wave_norm:bool, fold:int, progress:bool=True):
    """Cached, seeded DataLoaders for one job of `CompareConfig` `cfg`, validating on `fold` (spectrograms come from
    the feature cache, made once for all runs and folds)"""
    aug = [SpecAugment(policy=cfg.specaugment)] if cfg.specaugment else None
    kw = dict(bs=cfg.bs, spec=cfg.spec, wave_norm=wave_norm, batch_tfms=aug, cache=True, progress=progress)
    if src.layout == 'esc50':
        return esc50_dls(src.path, fold=fold, subset=cfg.subset, **kw)
    by = 'take' if cfg.speaker is None else 'speaker'
    # sr=None: the `--spec` preset's rate, as for ESC-50 (fsdd_dls alone defaults to 8 kHz)
    return fsdd_dls(src.path, by=by, test_speaker=cfg.speaker, sr=None, **kw)

def spec_cache(dl):
    "The `SpecCache` a cached DataLoader reads"
    return next(f.cache for f in dl.dataset.tls[0].tfms.fs if isinstance(f, CachedSpec))
