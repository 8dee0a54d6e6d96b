"""Data: DataBlocks for ESC-50 and folders in its layout (cross-validation by fold), FSDD and class-per-folder datasets.
Which layout a folder is in, and what each layout means, is `fastnorm.layouts`' (`LAYOUTS`, `detect_layout`)."""
from __future__ import annotations
import os, re, socket
from pathlib import Path
from typing import Callable
import pandas as pd, soundfile as sf
from fastcore.meta import delegates
from fastai.data.block import DataBlock, CategoryBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, RandomSplitter, ColSplitter, IndexSplitter, mask2idxs
from .audio import AudioBlock, AudioNormalize, AudioLoadError, AUDIO_EXTS
from .spec import MelSpec, spec_config
from .cache import SpecCache, SpecCacheBlock, CachedSpecDL
from .checks import check_choice, check_frac, check_int, check_positive
from .tables import empty_cells, whole_numbers

__all__ = ['ESC50_COLUMNS', 'ESC50_URL', 'FSDD_TEST_TAKES', 'read_esc50_csv',
           'CrossValidationSplitter', 'audio_dblock', 'check_batch_size', 'esc50_dblock', 'esc50_dls', 'esc50',
           'fsdd_items', 'FSDDSplitter', 'fsdd_dls', 'folder_items', 'folder_dls']

ESC50_COLUMNS = ['filename', 'fold', 'target', 'category', 'esc10', 'src_file', 'take']
FSDD_RE = re.compile(r'^(\d)_([A-Za-z]+)_(\d+)\.wav$')
FSDD_TEST_TAKES = range(5)  # AVMNIST's split of FSDD: takes 0-4 are the test (validation) set

def _row_list(mask, lines, k:int=3)->str:
    "How a message names the csv rows (1-based lines, the header is line 1) where `mask` holds: the first `k`"
    at = [int(l) for l in lines[mask.to_numpy() if hasattr(mask, 'to_numpy') else mask]]
    first = ', '.join(map(str, at[:k])) + (f" ... ({len(at)} rows)" if len(at) > k else '')
    return f"row{'s' if len(at) > 1 else ''} {first}"

def _marked(df:pd.DataFrame, col:str, csv:Path, lines=None)->pd.Series:
    "The rows of `df` whose `col` says True (a bool column as pandas reads ESC-50's csv, or its text)"
    v = df[col]
    if v.dtype == bool:
        return v
    lines = df.index.to_numpy() + 2 if lines is None else lines
    text = v.astype(str).str.strip().str.lower()
    bad = ~text.isin(['true', 'false', '1', '0'])
    if bad.any():
        raise ValueError(f"{csv}: column {col!r} must be True or False, not {_cell(v[bad].iloc[0])!r} "
                         f"(row {int(lines[int(bad.to_numpy().argmax())])})")
    return text.isin(['true', '1'])

def _cell(v):
    "A cell as Python holds it, for a message: 2.5, not np.float64(2.5)"
    return v.item() if hasattr(v, 'item') else v

def _integers(df:pd.DataFrame, col:str, csv:Path, lines, lo:int|None=None)->pd.Series:
    "Column `col` as int64, refusing a value that is not a whole number (`fold1`, 1.5) or is below `lo`, by value"
    v = df[col]
    num, ok = whole_numbers(v, lo)
    if not ok.all():
        i = int((~ok).to_numpy().argmax())
        what = 'integers' + (f' >= {lo}' if lo is not None else '')
        raise ValueError(f"{csv}: column {col!r} must hold {what}, not {_cell(v.iloc[i])!r} ({_row_list(~ok, lines)})")
    return num.astype('int64')

def _check_rows(df:pd.DataFrame, csv:Path, lines)->pd.DataFrame:
    """`df` with integer `fold` and `target`, refusing empty cells in ESC-50's columns, a non-integer fold or target,
    and a file listed twice (in two folds: a leak of validation into training); messages name the csv's rows `lines`"""
    for col in ESC50_COLUMNS[:4]:
        empty = empty_cells(df[col])
        if empty.any():
            what = 'label' if col in ('category', 'target') else 'value'
            raise ValueError(f"{csv}: column {col!r} is empty in {_row_list(empty, lines)}: every clip needs a {what}")
    df = df.assign(fold=_integers(df, 'fold', csv, lines), target=_integers(df, 'target', csv, lines, lo=0))
    dup = df['filename'].duplicated(keep=False)
    if dup.any():
        name = df['filename'][dup].iloc[0]
        same = (df['filename'] == name).to_numpy()
        folds = sorted(set(df['fold'][same].tolist()))
        n_names = df['filename'][dup].nunique()
        also = f" ({n_names} files are listed more than once)" if n_names > 1 else ''
        if len(folds) > 1:
            raise ValueError(f"{csv} lists {name!r} {int(same.sum())} times ({_row_list(same, lines)}), in folds "
                             f"{folds}: a clip in two folds leaks the validation set into training{also}")
        raise ValueError(f"{csv} lists {name!r} {int(same.sum())} times ({_row_list(same, lines)}): each clip must be "
                         f"listed once{also}")
    return df

def read_esc50_csv(path, # a folder in ESC-50's layout
                   subset:str|None=None, # a boolean column of the csv: only the rows marked True (e.g. 'esc10')
                  )->pd.DataFrame:
    """Read `path/meta/esc50.csv` of a folder in ESC-50's layout, checking its columns, rows and files; adds a `path`
    column. With `subset='esc10'`, only ESC-10's rows (their labels are ESC-10's 10 categories). Refused, naming the
    csv's rows: an empty cell in `filename`, `fold`, `target` or `category`, a fold or target that is not an integer,
    and a file listed twice (across folds, a leak of validation into training)"""
    path = Path(path)
    csv = path/'meta'/'esc50.csv'
    if not csv.is_file():
        raise FileNotFoundError(f"{path} is not in ESC-50's layout: expected {csv} (and the clips in {path/'audio'})")
    try: df = pd.read_csv(csv, dtype={'filename': str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{csv} is not a csv pandas can read (ESC-50's has a header row {ESC50_COLUMNS}): "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas makes the first cells an index when rows outnumber the header
        raise ValueError(f"{csv}: its rows have more cells than its header's {len(df.columns)} columns (a cell with an "
                         f"unquoted comma?), e.g. the row starting {df.index[0]!r}")
    missing = [c for c in ESC50_COLUMNS if c not in df.columns]
    if missing: raise ValueError(f"{csv} is missing column(s) {missing}: ESC-50's csv has {ESC50_COLUMNS}")
    if len(df) == 0: raise ValueError(f"{csv} lists no clips")
    lines = df.index.to_numpy() + 2  # the csv's line of each row: the header is line 1
    if subset is not None:
        if subset not in df.columns or subset in ESC50_COLUMNS[:4]:
            raise ValueError(f"subset {subset!r}: {csv} has no such subset column (ESC-50's is 'esc10')")
        keep = _marked(df, subset, csv, lines).to_numpy()
        df, lines = df[keep].reset_index(drop=True), lines[keep]
        if len(df) == 0: raise ValueError(f"{csv} marks no clip {subset}=True")
    df = _check_rows(df, csv, lines)
    audio = path/'audio'
    # one listing, not a stat per clip
    present = {e.name for e in os.scandir(audio) if e.is_file()} if audio.is_dir() else set()
    absent = [str(audio/f) for f in df['filename'] if f not in present]
    if absent: raise FileNotFoundError(f"{len(absent)} clip(s) listed in {csv} are missing, e.g. {absent[0]}")
    df['path'] = [str(audio/f) for f in df['filename']]
    return df

def _check_train(n_train:int, n:int, what:str):
    "A split must leave training rows: `what` says which validation set took all `n`"
    if n_train == 0:
        raise ValueError(f"{what} holds all {n} items: the split leaves no training rows (choose another validation "
                         "set, or add items outside it)")

def CrossValidationSplitter(fold:int=1, # the validation fold
                            col:str='fold', # column holding each item's fold
                           ):
    "Split a DataFrame: items of `fold` are the validation set, all others train"
    def _inner(df):
        folds = sorted(df[col].unique().tolist())
        if fold not in folds:
            raise ValueError(f"fold {fold!r} does not exist: the data has folds {folds} in column {col!r}")
        train, valid = ColSplitter(col, on=fold)(df)
        _check_train(len(train), len(df), f"validation fold {fold!r} (column {col!r})")
        return train, valid
    return _inner

def audio_dblock(splitter, # a fastai splitter over the items (rows of a DataFrame with `path` and `label`)
                 cfg:SpecConfig, # spectrogram settings (its `sr` is the rate every clip is resampled to)
                 duration:float, # crop/pad every clip to this length (s)
                 wave_norm:bool=False, # per-clip `AudioNormalize` before the spectrogram
                 batch_tfms=None, # more batch transforms (normalization, SpecAugment)
                 cache:bool|SpecCache=False, # spectrograms from a feature cache instead of on the fly
                 files=None, # with `cache=True`: the files to cache
                 label_col:str='label', # column holding the label
                 progress:bool=True, # progress bar while the cache is built
                 get_x=None, # how an item (a DataFrame row) gives its audio file; default: `ColReader('path')`
                )->DataBlock:
    """The DataBlock every dataset here shares: audio -> (waveform norm) -> spectrogram, labelled by `label_col`.
    With the cache every clip is centre-cropped/padded once (as at validation), so training from it has no random crop:
    no difference when the clips already have `duration`, as in ESC-50."""
    duration = check_positive('duration', duration)
    tfms = list(batch_tfms or [])
    if cache is not False:
        wave = [type(t).__name__ for t in tfms if getattr(t, 'order', 0) < MelSpec.order]
        if wave:
            raise ValueError(f"batch_tfms {wave} work on the waveform, before the spectrogram, but a feature cache "
                             "holds spectrograms: use `wave_norm=True` for AudioNormalize, or `cache=False` for "
                             "waveform augmentations")
        if cache is True: cache = SpecCache.build(files, cfg, duration, wave_norm=wave_norm, progress=progress)
        blocks = (SpecCacheBlock(cache), CategoryBlock)
    else:
        blocks = (AudioBlock(sr=cfg.sr, duration=duration), CategoryBlock)
        tfms = ([AudioNormalize()] if wave_norm else []) + [MelSpec(cfg=cfg)] + tfms
    get_x = ColReader('path') if get_x is None else get_x
    return DataBlock(blocks=blocks, get_x=get_x, get_y=ColReader(label_col), splitter=splitter, batch_tfms=tfms)

def check_batch_size(n_train:int, bs:int, what:str='the training set'):
    "Fail before training when the training set cannot fill one batch"
    bs = check_int('bs', bs, lo=1)
    if n_train < bs:
        raise ValueError(f"bs={bs} is larger than {what} ({n_train} items): lower `bs` to at most {n_train}")

def _delegates_with_kwargs(to, but=None):
    """`delegates(to, keep=True)` whose docments still follow to `to`: fastcore links them (`__delwrap__`) only when
    `**kwargs` leaves the signature, and the DataLoaders helpers pass the rest of theirs on to fastai's `dataloaders`"""
    def _f(f):
        f = delegates(to, keep=True, but=but)(f)
        f.__delwrap__ = to
        return f
    return _f

def _audio_block(df, # the items: a DataFrame with a `path` column (the files a feature cache holds)
                 splitter, # a fastai splitter over `df`
                 spec='quick', # spectrogram preset name, `SpecConfig` or `MelSpec`
                 sr:int|None=None, # resample every clip to this rate (Hz); default: the spectrogram's
                 duration:float|None=None, # crop/pad every clip to this length (s); default: the first clip's
                 wave_norm:bool=False, # per-clip `AudioNormalize` on the waveform, before the spectrogram
                 batch_tfms:list|None=None, # more batch transforms (normalization, SpecAugment)
                 cache:bool|SpecCache=False, # use the feature cache (spectrograms made once), or this `SpecCache`
                 progress:bool=True, # progress bar while the cache is built
                 label_col:str='label', # column holding the label
                 get_x:Callable|None=None, # how a row gives its audio file; default: `ColReader('path')`
                )->DataBlock:
    "`audio_dblock` over `df` from the arguments the dataset helpers share: their docments live here, once"
    if duration is None: duration = _duration(df['path'].iloc[0])
    return audio_dblock(splitter, spec_config(spec, sr), duration, wave_norm, batch_tfms, cache, files=df['path'],
                        label_col=label_col, progress=progress, get_x=get_x)

def _duration(path)->float:
    "Length (s) of an audio file from its header; an unreadable one is an `AudioLoadError` naming it"
    try: return sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise AudioLoadError(f"Could not decode audio file {path}: {e}") from e

@_delegates_with_kwargs(_audio_block)
def _audio_dls(df, # the items, as for `_audio_block`
               splitter, # a fastai splitter over `df`
               bs:int=32, # items per batch
               *, spec='quick', sr:int|None=None, duration:float|None=None, # crop/pad to this length (s)
               wave_norm:bool=False, # per-clip `AudioNormalize` on the waveform, before the spectrogram
               batch_tfms:list|None=None, # more batch transforms (normalization, SpecAugment)
               cache:bool|SpecCache=False, progress:bool=True, label_col:str='label', # column holding the label
               get_x:Callable|None=None, # how a row gives its audio file; default: `ColReader('path')`
               **kwargs)->DataLoaders:
    """`DataLoaders` over `df`, failing early when the training set cannot fill a batch: `_audio_block`'s arguments
    (their docments are its), then fastai's `DataBlock.dataloaders` ones (`num_workers`, `device`, ...)"""
    dblock = _audio_block(df, splitter, spec, sr, duration, wave_norm, batch_tfms, cache, progress, label_col, get_x)
    check_batch_size(len(splitter(df)[0]), bs)
    if dblock.dl_type is CachedSpecDL:
        kwargs.setdefault('num_workers', 0)  # a memmap slice per batch: worker processes would only add start-up
    return dblock.dataloaders(df, bs=bs, **kwargs)

def _esc50_x(path)->dict:
    "How ESC-50's rows give a clip and a label; the clip is `df['path']` of `read_esc50_csv`, the cache's keys"
    return dict(label_col='category', get_x=ColReader('filename', pref=Path(path)/'audio'))

@delegates(_audio_block, but=['label_col', 'get_x'])
def esc50_dblock(path, # a folder in ESC-50's layout
                 fold:int=1, # validation fold
                 subset:str|None=None, # only the csv's rows marked True in this column, e.g. 'esc10'
                 **kwargs)->DataBlock:
    """A `DataBlock` for ESC-50 or any folder in its layout, labelled by `category`, fold `fold` as validation. Its
    items are rows of the csv as pandas reads it (`pd.read_csv(path/'meta'/'esc50.csv')`), or of any DataFrame with
    `filename`, `fold` and `category` columns: each clip is `path/'audio'/filename` (the post's and fastaudio's way)."""
    return _audio_block(read_esc50_csv(path, subset), CrossValidationSplitter(fold), **_esc50_x(path), **kwargs)

@_delegates_with_kwargs(_audio_dls, but=['label_col', 'get_x'])
def esc50_dls(path, # a folder in ESC-50's layout
              fold:int=1, # validation fold
              subset:str|None=None, # only the csv's rows marked True in this column, e.g. 'esc10'
              **kwargs, # fastai's `DataBlock.dataloaders` arguments (`num_workers`, `device`, ...)
             )->DataLoaders:
    "`DataLoaders` from `esc50_dblock` (same arguments, plus `bs` and fastai's `dataloaders` kwargs)"
    df = read_esc50_csv(path, subset)  # read (and every clip checked) once for the block and the loaders
    return _audio_dls(df, CrossValidationSplitter(fold), **_esc50_x(path), **kwargs)

ESC50_URL = 'https://github.com/karoldvl/ESC-50/archive/master.zip'  # what fastaudio's URLs.ESC50 pointed at

def _esc50_root(p:Path)->Path:
    "The folder holding meta/esc50.csv inside what untar_data unpacked"
    if (p/'meta'/'esc50.csv').is_file(): return p
    found = sorted(p.glob('*/meta/esc50.csv'))
    if not found: raise FileNotFoundError(f"{p} holds no meta/esc50.csv: the download is not ESC-50's layout")
    return found[0].parent.parent

def esc50(path=None, # a local copy of ESC-50 (the folder holding audio/ and meta/); default: fastai's download
          timeout:float=20., # seconds to wait for the network before failing
         )->Path:
    """The real ESC-50: a local folder, or fastai's `untar_data` of `URLs.ESC50` (where fastai defines it, else
    `ESC50_URL`); downloads once"""
    if path is not None:
        read_esc50_csv(path)
        return Path(path)
    timeout = check_positive('timeout', timeout)
    from fastai.data.external import untar_data, URLs
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try: return _esc50_root(Path(untar_data(getattr(URLs, 'ESC50', ESC50_URL))))
    except Exception as e:
        raise RuntimeError(f"Could not get ESC-50 with untar_data: {type(e).__name__}: {e}\n"
                           "Offline? Use a local copy: esc50('/path/to/ESC-50-master') or "
                           "`fastnorm compare --data /path/to/ESC-50-master`, "
                           "or the embedded dataset: synth_esc50() / `--data synth`.") from e
    finally: socket.setdefaulttimeout(old)

def fsdd_items(path)->pd.DataFrame:
    "FSDD recordings `{digit}_{speaker}_{take}.wav` in `path` as a DataFrame: path, label (digit), speaker, take"
    path = Path(path)
    if not path.is_dir(): raise FileNotFoundError(f"FSDD folder not found: {path}")
    files = sorted(f for f in path.glob('*.wav') if f.is_file())
    rows = [(str(f), *m.groups()) for f in files if (m := FSDD_RE.match(f.name))]
    if not rows:
        raise ValueError(f"{path} holds no FSDD recordings named {{digit}}_{{speaker}}_{{take}}.wav "
                         "(e.g. 7_jackson_32.wav)")
    df = pd.DataFrame(rows, columns=['path', 'label', 'speaker', 'take'])
    df['take'] = df['take'].astype(int)
    return df

def FSDDSplitter(by:str='take', # 'take': takes `test_takes` are validation (like AVMNIST); 'speaker': `test_speaker`
                 test_takes=FSDD_TEST_TAKES, # with by='take': the takes held out
                 test_speaker:str|None=None, # with by='speaker': the speaker held out; default: the first, sorted
                ):
    "Split FSDD items by take (takes 0-4 as test, like AVMNIST) or by speaker (one held-out speaker)"
    check_choice('by', by, ('take', 'speaker'))
    def _inner(df):
        if by == 'take': valid = df['take'].isin(list(test_takes)).values
        else:
            speakers = sorted(df['speaker'].unique())
            spk = test_speaker if test_speaker is not None else speakers[0]
            if spk not in speakers: raise ValueError(f"test_speaker {spk!r} does not exist: speakers are {speakers}")
            valid = (df['speaker'] == spk).values
        what = (f"the test takes {list(test_takes)}" if by == 'take' else f"test speaker {spk!r}") + " of FSDD"
        _check_train(int((~valid).sum()), len(df), what)
        return IndexSplitter(mask2idxs(valid))(df)
    return _inner

@_delegates_with_kwargs(_audio_dls, but=['label_col', 'get_x'])
def fsdd_dls(path, # a folder of FSDD recordings, `{digit}_{speaker}_{take}.wav`
             by:str='take', # split by 'take' (takes 0-4 are validation, like AVMNIST) or by 'speaker'
             test_speaker:str|None=None, # with by='speaker': the speaker held out; default: the first, sorted
             sr:int|None=8000, # resample every clip to this rate (Hz); None: the spectrogram's
             duration:float|None=1.0, # crop/pad every clip to this length (s); None: the first clip's
             **kwargs, # fastai's `DataBlock.dataloaders` arguments (`num_workers`, `device`, ...)
            )->DataLoaders:
    "`DataLoaders` for FSDD, split by take or speaker; clips padded/cropped to `duration` (default 8 kHz, 1 s)"
    df, splitter = fsdd_items(path), FSDDSplitter(by, test_speaker=test_speaker)
    return _audio_dls(df, splitter, sr=sr, duration=duration, **kwargs)

def folder_items(path)->pd.DataFrame:
    "Audio files in class folders (`path/<label>/*.wav`, or `path/{train,valid}/<label>/*.wav`): path, label, is_valid"
    path = Path(path)
    if not path.is_dir(): raise FileNotFoundError(f"Dataset folder not found: {path}")
    split = (path/'train').is_dir() and (path/'valid').is_dir()
    files = sorted(f for f in path.rglob('*') if f.suffix.lower() in AUDIO_EXTS and f.is_file())
    if not files: raise ValueError(f"{path} holds no audio files ({', '.join(AUDIO_EXTS)}) in class folders")
    # a file elsewhere would be labelled by the wrong folder (its split's, a subfolder's, the dataset's)
    depth = 3 if split else 2
    astray = [f for f in files if len(f.relative_to(path).parts) != depth or (split and f.relative_to(path).parts[0]
                                                                              not in ('train', 'valid'))]
    if astray:
        where = 'train/<label>/ or valid/<label>/' if split else '<label>/'
        raise ValueError(f"{astray[0]} is not in a class folder of {path}: expected the audio in {where} "
                         f"({len(astray)} file(s) elsewhere)")
    return pd.DataFrame(dict(path=[str(f) for f in files], label=[f.parent.name for f in files],
                             is_valid=[split and f.parent.parent.name == 'valid' for f in files]))

@_delegates_with_kwargs(_audio_dls, but=['label_col', 'get_x'])
def folder_dls(path, # a folder of class folders, `<label>/*.wav`, or `train/<label>/` and `valid/<label>/`
               valid_pct:float=0.2, # without train/ and valid/: the fraction of items held out at random
               seed:int=42, # the random split's seed
               **kwargs, # fastai's `DataBlock.dataloaders` arguments (`num_workers`, `device`, ...)
              )->DataLoaders:
    "`DataLoaders` for class-per-folder audio: `train/` and `valid/` when present, else a random `valid_pct` split"
    df = folder_items(path)
    if df['is_valid'].any():
        _check_train(int((~df['is_valid']).sum()), len(df), f"{Path(path)/'valid'} (with no audio in train/)")
        splitter = ColSplitter('is_valid')
    else: splitter = RandomSplitter(check_frac('valid_pct', valid_pct), seed=seed)
    return _audio_dls(df, splitter, **kwargs)
