"""Dataset layouts: the one place that knows each layout fastnorm reads (ESC-50's, FSDD's, class folders), how to tell
it, and how it lists items, labels and its folds or splits. `detect_layout` finds a folder's; the DataLoaders helpers
(`fastnorm.data`), the comparison (`fastnorm.study`), the AVMNIST export and the noise source (`NoiseClips`) ask the
`Layout` in `LAYOUTS` instead of branching on its name. A new layout is one `Layout` subclass and one entry."""
from __future__ import annotations
from pathlib import Path
import numpy as np, pandas as pd
from .audio import AUDIO_EXTS
from .checks import check_choice
from .data import (FSDD_RE, FSDD_TEST_TAKES, read_esc50_csv, fsdd_items, folder_items, esc50_dls, fsdd_dls,
                   CrossValidationSplitter, FSDDSplitter)

__all__ = ['Layout', 'LAYOUTS', 'detect_layout']

class Layout:
    "A dataset layout: subclasses say how to find it, read its items and split them"
    name:str = ''  # its key in `LAYOUTS`
    doc:str = ''  # what a folder in it holds, for messages
    title:str = ''  # how a message names it: "ESC-50's"
    label_col:str = 'label'  # the column of `items` holding the label
    catch_all:bool = False  # any audio matches it: tried only where the caller reads it
    trains:bool = False  # `dls` makes its DataLoaders: the comparison trains on it
    options:tuple = ()  # what the comparison may choose: 'folds' (cross-validation), 'speaker', 'subset'
    splits:str = ''  # how it is split when it has no folds, for messages
    def find(self, path:Path)->Path|None:
        "The folder holding the items when `path` is in this layout, else None"
        raise NotImplementedError
    def items(self, root:Path, subset:str|None=None)->pd.DataFrame:
        "The items of `root`, checked: a `path` column, the label in `label_col`, and the layout's own columns"
        raise NotImplementedError
    def labelled(self, root:Path, test_fold:int, seed:int)->tuple:
        "(items with `path`, integer `label` and boolean `test`, class names): the export's rows of `root`"
        raise NotImplementedError
    def folds(self, items:pd.DataFrame)->list|None:
        "Its cross-validation folds, or None when it is split otherwise"
        return None
    def train_size(self, items:pd.DataFrame, fold:int=1, speaker:str|None=None)->int:
        "How many items train when `fold` (or `speaker`) validates; a missing fold or speaker is an error"
        raise NotImplementedError
    def dls(self, root:Path, fold:int=1, speaker:str|None=None, subset:str|None=None, **kwargs):
        "The DataLoaders of `root` validating on `fold` (or `speaker`); `kwargs` as `esc50_dls`"
        raise NotImplementedError(f"fastnorm cannot train on a dataset in {self.title} layout here")

class ESC50Layout(Layout):
    name, doc, title = 'esc50', "ESC-50's: meta/esc50.csv and the clips in audio/", "ESC-50's"
    label_col, options, trains = 'category', ('folds', 'subset'), True
    def find(self, path): return path if (path/'meta'/'esc50.csv').is_file() else None
    def items(self, root, subset=None): return read_esc50_csv(root, subset)
    def folds(self, items): return sorted(int(f) for f in items['fold'].unique())
    def train_size(self, items, fold=1, speaker=None): return len(CrossValidationSplitter(fold)(items)[0])
    def dls(self, root, fold=1, speaker=None, subset=None, **kwargs):
        return esc50_dls(root, fold=fold, subset=subset, **kwargs)
    def labelled(self, root, test_fold, seed):
        "The label is `target`, fold `test_fold` is test"
        df = read_esc50_csv(root)
        folds = self.folds(df)
        if test_fold not in folds:
            raise ValueError(f"test_fold {test_fold!r} does not exist: {root} has folds {folds}")
        names = df.drop_duplicates('target').set_index('target')['category']
        classes = [str(names.get(i, i)) for i in range(int(df['target'].max()) + 1)]
        test = df['fold'] == test_fold
        return pd.DataFrame(dict(path=df['path'], label=df['target'].astype(int), test=test)), classes

def _has_fsdd(p:Path)->bool: return p.is_dir() and any(FSDD_RE.match(f.name) for f in p.glob('*.wav'))

class FSDDLayout(Layout):
    name, doc = 'fsdd', "FSDD's: {digit}_{speaker}_{take}.wav files, in the folder or in its recordings/"
    title, options, trains = "FSDD's", ('speaker',), True
    splits = f"it is split by take (takes {FSDD_TEST_TAKES[0]}-{FSDD_TEST_TAKES[-1]} validate) or by --speaker"
    def find(self, path): return next((r for r in (path, path/'recordings') if _has_fsdd(r)), None)
    def items(self, root, subset=None): return fsdd_items(root)
    def _splitter(self, speaker): return FSDDSplitter('take' if speaker is None else 'speaker', test_speaker=speaker)
    def train_size(self, items, fold=1, speaker=None): return len(self._splitter(speaker)(items)[0])
    def dls(self, root, fold=1, speaker=None, subset=None, **kwargs):
        # sr=None: the spectrogram preset's rate, as for ESC-50 (fsdd_dls alone defaults to 8 kHz)
        by = 'take' if speaker is None else 'speaker'
        return fsdd_dls(root, by=by, test_speaker=speaker, **{'sr': None, **kwargs})
    def labelled(self, root, test_fold, seed):
        "The label is the digit, takes `FSDD_TEST_TAKES` are test (AVMNIST's split)"
        f = fsdd_items(root)
        test = f['take'].isin(list(FSDD_TEST_TAKES))
        return pd.DataFrame(dict(path=f['path'], label=f['label'].astype(int), test=test)), [str(i) for i in range(10)]

class FolderLayout(Layout):
    name, doc = 'folders', "class folders: <label>/*.wav, or train/<label>/ and valid/<label>/"
    title, catch_all = "class folders'", True
    splits = "valid/ validates, or a seeded fraction"
    def find(self, path):
        return path if any(f.suffix.lower() in AUDIO_EXTS and f.is_file() for f in path.rglob('*')) else None
    def items(self, root, subset=None): return folder_items(root)
    def labelled(self, root, test_fold, seed):
        "Labels are the sorted folder names; `valid/` is test, or else a seeded 20%"
        f = folder_items(root)
        classes = sorted(f['label'].unique())
        test = f['is_valid'].values
        if not test.any():
            test = np.zeros(len(f), dtype=bool)
            test[np.random.default_rng(seed).permutation(len(f))[:max(1, round(.2 * len(f)))]] = True
        return pd.DataFrame(dict(path=f['path'], label=f['label'].map(classes.index).astype(int), test=test)), classes

# the registry of layouts, tried in this order: from the most specific (ESC-50's csv, FSDD's file names) to any audio
LAYOUTS = {l.name: l for l in (ESC50Layout(), FSDDLayout(), FolderLayout())}

def detect_layout(path, # a dataset folder
                  allowed=tuple(LAYOUTS), # the layouts the caller can read (names in `LAYOUTS`, or one name)
                  what:str='dataset folder', # how an error names `path` (e.g. '--data')
                 )->tuple:
    """(layout, root): which of `LAYOUTS` the folder `path` is in (its name), and the folder holding its items (FSDD's
    may be `path/recordings`). Layouts are tried in `LAYOUTS`' order, one that takes any audio (class folders) only
    when allowed; a folder in none of `allowed` is an error that says what was expected"""
    allowed = (allowed,) if isinstance(allowed, str) else tuple(allowed)
    for k in allowed: check_choice('allowed', k, tuple(LAYOUTS))
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path}: {'not a folder' if path.exists() else 'no such folder'}")
    tried = (l for l in LAYOUTS.values() if not l.catch_all or l.name in allowed)
    found = next(((l.name, root) for l in tried if (root := l.find(path)) is not None), None)
    if found is None or found[0] not in allowed:
        expected = ' or '.join(LAYOUTS[k].doc for k in allowed)
        seen = f" (it is in the {found[0]!r} layout)" if found else ''
        raise ValueError(f"{what} {path} is not in a layout fastnorm reads here: expected {expected}{seen}")
    return found
