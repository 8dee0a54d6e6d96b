"""The rows an AVMNIST export writes: a dataset's items for a split (`dataset_items`), and, to match another dataset
row for row, one item per label of a label array (`follow_labels`)."""
from __future__ import annotations
from pathlib import Path
import numpy as np, pandas as pd
from ..checks import check_choice
from ..layouts import LAYOUTS, detect_layout
from ..noise import NOISE_SPLITS
from ..synth import synth_esc50

__all__ = ['dataset_items', 'follow_labels']

def _load_labels(f:Path)->np.ndarray:
    "The array in a `.npy` labels file; a file numpy cannot read (cut short, garbled, pickled objects) names itself"
    if not f.is_file(): raise FileNotFoundError(f"Labels file not found: {f}")
    try: labels = np.load(f, allow_pickle=False)
    except Exception as e:  # numpy's header parser, a short read, pickled objects: bytes it cannot read
        raise ValueError(f"labels file {f} is not a .npy array numpy can read ({type(e).__name__}: {e}): expected "
                         "a 1-D array of integer labels, as np.save writes it") from None
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"labels file {f} holds {type(labels).__name__} (an .npz?), not one 1-D array of integer "
                         "labels")
    return labels

def dataset_items(data=None, # a folder in FSDD's, ESC-50's or class folders' layout; None: the embedded dataset
                  split:str='all', # 'train', 'test' or 'all'
                  test_fold:int=5, # ESC-50 layout: the test fold
                  seed:int=0, # class folders without train/valid: the seed of the 20% test partition
                 )->tuple:
    """(items, classes, layout): a DataFrame of `path` and integer `label` (sorted by path) for `split`, the class
    names, and the layout (a key of `fastnorm.layouts.LAYOUTS`, whose `Layout.labelled` gives the rows). FSDD: the
    label is the digit, takes `FSDD_TEST_TAKES` (0-4) are test (AVMNIST's split); ESC-50: `target`, fold `test_fold`
    is test; class folders: sorted folder names, `valid/` (or a seeded 20%) is test."""
    check_choice('split', split, NOISE_SPLITS)
    p = synth_esc50() if data is None else Path(data)
    layout, root = detect_layout(p, what='dataset folder')
    df, classes = LAYOUTS[layout].labelled(root, test_fold, seed)
    if split != 'all': df = df[df['test'] == (split == 'test')]
    if len(df) == 0: raise ValueError(f"{p} has no items in split {split!r}")
    return df.sort_values('path')[['path', 'label']].reset_index(drop=True), classes, layout

def follow_labels(labels, # `[N]` integer labels to follow, or the `.npy` file holding them (AVMNIST's train_labels.npy)
                  items:pd.DataFrame, # `path`, `label`
                  classes=None, # class names, for messages
                  name:str|None=None, # where the labels came from, for messages: 'labels', or 'labels file PATH'
                 )->pd.DataFrame:
    "One item per label, cycling through each label's items in order (the AVMNIST recipe): the k-th use of a label, mod"
    if isinstance(labels, (str, Path)):
        name = name or f"labels file {labels}"
        labels = _load_labels(Path(labels))
    name = name or 'labels'
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integer labels "
                         f"(shape {labels.shape}, dtype {labels.dtype} given)")
    labels = labels.astype(labels.dtype.newbyteorder('='))  # native order: a big-endian array (np.save keeps it) works
    groups = {int(k): g['path'].tolist() for k, g in items.groupby('label')}
    missing = sorted(set(np.unique(labels).tolist()) - set(groups))
    if missing:
        first = int(np.nonzero(labels == missing[0])[0][0])
        what = f" ({classes[missing[0]]!r})" if classes is not None and 0 <= missing[0] < len(classes) else ''
        also = f"; all missing: {missing}" if len(missing) > 1 else ''
        raise ValueError(f"{name} asks for label {missing[0]}{what} (first at row {first}) but the data has no "
                         f"items of it: labels present are {sorted(groups)}{also}")
    use = pd.Series(labels).groupby(labels).cumcount().values  # k-th use of its label
    paths = [groups[int(l)][k % len(groups[int(l)])] for l, k in zip(labels, use)]
    return pd.DataFrame(dict(path=paths, label=labels.astype(np.int64)))
