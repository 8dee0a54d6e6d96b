"Feature cache: a dataset's spectrograms computed once into a `.npy` memmap with an index, reused on the next call."
from __future__ import annotations
import hashlib, json, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastai.data.block import TransformBlock
from fastai.data.transforms import Transform
from fastai.data.core import TfmdDL
from fasttransform import Pipeline
from fastprogress.fastprogress import progress_bar
from .audio import AudioTensor, AudioNormalize, AudioCropPad
from .spec import SpecConfig, TensorSpec, MelSpec
from .utils import fastnorm_home, atomic_dir, reserve, explain_full_disk
from .checks import check_int, check_positive
from . import __version__

__all__ = ['SpecCache', 'CacheError', 'CachedSpec', 'CachedSpecDL', 'SpecCacheBlock', 'dl_crop']

# 2: per-item statistics in `stats.npz`; caches of format 1 lack them (`item_stats` is None) and are rebuilt by `build`
CACHE_FORMAT = 2

def _files_key(files)->str:
    "Hash of the file list: names, sizes and modification times, in order"
    h = hashlib.sha1()
    for f in files:
        st = Path(f).stat()
        h.update(f'{f}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()

def time_stats(x:torch.Tensor)->tuple:
    """Mean and M2 (sum of squared deviations) of each item of `x` `[B,C,F,T]` over time, float64 two-pass, `[B,C,F]`
    each"""
    x = x.as_subclass(torch.Tensor).double()
    mean = x.mean(-1)
    return mean, (x - mean[..., None]).pow_(2).sum(-1)

def _make_specs(waves, cfg:SpecConfig, duration:float, wave_norm:bool, tfms=None)->TensorSpec:
    """Spectrograms `[B,C,F,T]` of clips `[C,N]` at `cfg.sr`, as at validation: centre-cropped (longer) or zero-padded
    at the end (shorter) to `duration`, `AudioNormalize`d with `wave_norm`, then `MelSpec(cfg=cfg)` (`tfms`: these)"""
    crop, norm, tospec = tfms or (AudioCropPad(duration), AudioNormalize(), MelSpec(cfg=cfg))
    x = AudioTensor(torch.stack([crop(w, split_idx=1) for w in waves]), sr=cfg.sr)
    if wave_norm: x = norm(x)
    return tospec(x)

def _digest(meta:dict)->str:
    "What `meta.json` holds about itself: the sha1 of its other entries, so a hand-edited file is known"
    rest = {k: v for k, v in meta.items() if k != 'check'}
    return hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()

def _files_sha1(files)->str: return hashlib.sha1('\n'.join(map(str, files)).encode()).hexdigest()

class CacheError(ValueError):
    "A feature cache folder whose files are damaged, cut short or edited: `SpecCache.build` rebuilds it"

def _damaged(f:Path, what:str):
    return CacheError(f"The feature cache file {f} is damaged: {what}. Delete {f.parent} (fastnorm rebuilds it)")

def _read_meta(f:Path)->tuple:
    "(meta, cfg) of a cache's `meta.json`, checked: JSON, every entry of its type, its own digest, shape and cfg agree"
    try: meta = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e: raise _damaged(f, f"not JSON ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict): raise _damaged(f, f"a {type(meta).__name__}, not a JSON object")
    missing = [k for k in ('key', 'cfg', 'duration', 'wave_norm', 'shape') if k not in meta]
    if missing: raise _damaged(f, f"it lacks {missing}")
    if 'check' in meta and meta['check'] != _digest(meta): raise _damaged(f, "edited since it was written")
    try: cfg = SpecConfig(**meta['cfg'])
    except (TypeError, ValueError) as e: raise _damaged(f, f"cfg {meta['cfg']!r}: {e}") from None
    shape, dur = meta['shape'], meta['duration']
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
    if not (isinstance(shape, list) and len(shape) == 4 and all(whole(v) and v >= 1 for v in shape)):
        raise _damaged(f, f"shape {shape!r} is not 4 positive integers")
    if not (isinstance(dur, (int, float)) and not isinstance(dur, bool) and 0 < dur < 1e7
            and isinstance(meta['wave_norm'], bool)):
        raise _damaged(f, f"duration {dur!r} or wave_norm {meta['wave_norm']!r}")
    want = [shape[0], 1, cfg.n_freq, cfg.n_frames(int(round(dur * cfg.sr)))]
    if shape != want: raise _damaged(f, f"shape {shape} is not what its cfg and duration make ({want})")
    return meta, cfg

def _read_index(f:Path, meta:dict)->pd.DataFrame:
    "A cache's `index.csv`, checked: a file per row, rows 0..N-1 in order, the files `meta.json` was written for"
    try: index = pd.read_csv(f, dtype={'file': str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise _damaged(f, f"not a csv ({type(e).__name__}: {e})") from None
    if list(index.columns) != ['file', 'row'] or not isinstance(index.index, pd.RangeIndex):  # extra cells: an index
        raise _damaged(f, f"columns {list(index.columns)}, not ['file', 'row']")
    n = meta['shape'][0]
    rows = pd.to_numeric(index['row'], errors='coerce')
    if len(index) != n or not (rows.to_numpy() == np.arange(n)).all():
        raise _damaged(f, f"its rows are not 0..{n - 1} in order ({len(index)} rows)")
    if index['file'].isna().any() or index['file'].duplicated().any(): raise _damaged(f, "a file is empty or twice")
    if 'files' in meta and meta['files'] != _files_sha1(index['file']):
        raise _damaged(f, "its files are not those the cache was built for")
    return index.assign(row=rows.astype('int64'))

class SpecCache:
    """Spectrograms of `files` (as `SpecCache.build` made them) in `data.npy` (a memmap) with `index.csv`; `cache[file]`
    is a `TensorSpec`. `stats.npz` holds each item's statistics over time, which `compute_stats` merges instead of
    reading the spectrograms. The memmap opens on first use, never while unpickling, so a learner trained from the cache
    loads where the cache is not; `spec` computes what the cache lacks with the same settings."""
    def __init__(self, path):
        self.path = Path(path)
        for f in ('meta.json', 'index.csv'):
            if not (self.path/f).is_file(): raise FileNotFoundError(f"Not a feature cache: {self.path/f} not found")
        self.meta, self.cfg = _read_meta(self.path/'meta.json')
        self.index = _read_index(self.path/'index.csv', self.meta)
        self.rows = dict(zip(self.index['file'], self.index['row'].tolist()))

    @property
    def duration(self)->float:
        "Length (s) every clip is centre-cropped / padded to"
        return float(self.meta['duration'])
    @property
    def wave_norm(self)->bool:
        "Whether each clip was `AudioNormalize`d before its spectrogram"
        return bool(self.meta['wave_norm'])
    @property
    def available(self)->bool:
        "Whether the spectrograms are on this machine (a learner exported from the cache may run where they are not)"
        return '_data' in self.__dict__ or (self.path/'data.npy').is_file()
    @property
    def data(self)->np.ndarray:
        "The spectrograms `[N,C,F,T]`, a read-only memmap opened on first use"
        if '_data' not in self.__dict__:
            f = self.path/'data.npy'
            if not f.is_file(): raise FileNotFoundError(f"The feature cache's spectrograms are gone: {f} not found")
            try: data = np.load(f, mmap_mode='r')
            except Exception as e:  # numpy's header parser or mmap: whatever it says of bytes it cannot read
                raise _damaged(f, f"not a .npy file numpy can map ({type(e).__name__}: {e})") from None
            if (not isinstance(data, np.ndarray) or data.dtype != np.dtype('<f4') or not data.flags.c_contiguous
                    or list(data.shape) != list(self.meta['shape'])):
                what = f"{getattr(data, 'dtype', type(data).__name__)} {list(getattr(data, 'shape', ()))}"
                raise _damaged(f, f"it holds {what}, not float32 {self.meta['shape']} in C order")
            self._data = data
        return self._data

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ('_data', '_item_stats', '_tfms')}
    def __len__(self): return len(self.rows)
    def __repr__(self): return f"SpecCache({self.path}, {len(self)} items of shape {tuple(self.meta['shape'][1:])})"
    def __contains__(self, file)->bool: return isinstance(file, (str, Path)) and str(file) in self.rows
    def __getitem__(self, file)->TensorSpec:
        key = str(file)
        if key not in self.rows: raise KeyError(f"{file} is not in the feature cache at {self.path}")
        return TensorSpec(torch.from_numpy(np.array(self.data[self.rows[key]])), cfg=self.cfg)

    def compute(self, item)->TensorSpec:
        """The spectrogram `[C,F,T]` of an audio file (str or Path, resampled to `cfg.sr`) or an `AudioTensor` `[C,N]`
        at `cfg.sr`, made with exactly the cache's settings: centre crop or end padding to `duration`, waveform norm"""
        if isinstance(item, (str, Path)): x = AudioTensor.create(item, sr=self.cfg.sr)
        elif isinstance(item, AudioTensor): x = item
        else: raise ValueError(f"Expected an audio file (str or Path) or an AudioTensor ({type(item).__name__} given)")
        sr = getattr(x, 'sr', None)
        if sr != self.cfg.sr:
            raise ValueError(f"This AudioTensor has sr={sr} Hz but the spectrograms are made at {self.cfg.sr} Hz: "
                             f"load it with AudioTensor.create(file, sr={self.cfg.sr}), or give the file's path")
        if x.ndim != 2: raise ValueError(f"Expected one clip `[C,N]` (shape {list(x.shape)} given)")
        if '_tfms' not in self.__dict__:
            self._tfms = (AudioCropPad(self.duration), AudioNormalize(), MelSpec(cfg=self.cfg))
        return _make_specs([x], self.cfg, self.duration, self.wave_norm, self._tfms)[0]

    def spec(self, item)->TensorSpec:
        "The spectrogram of a file or `AudioTensor`: from the cache if it holds the file (and is here), else computed"
        return self[item] if item in self and self.available else self.compute(item)

    @property
    def item_stats(self)->dict|None:
        """Each item's float64 `count`, `mean` and `m2` (sum of squared deviations) over time, `[N,C,F]` tensors by row;
        None in a cache without them"""
        if '_item_stats' not in self.__dict__:
            p = self.path/'stats.npz'
            self._item_stats = None
            if p.is_file(): self._item_stats = self._read_stats(p)
        return self._item_stats

    def _read_stats(self, p:Path)->dict:
        "`stats.npz`, checked: count, mean and m2 float64 `[N,C,F]`, finite, count > 0 and m2 >= 0"
        try:
            with np.load(p, allow_pickle=False) as z: st = {k: z[k] for k in ('count', 'mean', 'm2')}
        except Exception as e:  # zip, CRC, a missing array, a header numpy cannot parse
            raise _damaged(p, f"not the arrays count, mean, m2 of a .npz numpy can read ({type(e).__name__}: "
                              f"{e})") from None
        shape = tuple(self.meta['shape'][:3])
        for k, v in st.items():
            if v.dtype != np.float64 or v.shape != shape:
                raise _damaged(p, f"{k} is {v.dtype} {list(v.shape)}, not float64 {list(shape)}")
        if not all(np.isfinite(v).all() for v in st.values()) or (st['count'] <= 0).any() or (st['m2'] < 0).any():
            raise _damaged(p, "NaN, Inf, a count <= 0 or a negative m2")
        return {k: torch.from_numpy(v) for k, v in st.items()}

    def check(self)->SpecCache:
        "Open every file of the cache (data.npy's header, stats.npz), raising `CacheError` where one is damaged"
        for k in ('_data', '_item_stats'): self.__dict__.pop(k, None)
        _ = self.data, self.item_stats  # each checks its file as it opens it
        return self

    @staticmethod
    def key(files, cfg:SpecConfig, duration:float, wave_norm:bool)->str:
        spec = json.dumps(dict(files=_files_key(files), cfg=cfg.to_dict(), duration=float(duration),
                               wave_norm=bool(wave_norm), fmt=CACHE_FORMAT), sort_keys=True)
        return hashlib.sha1(spec.encode()).hexdigest()[:16]

    @classmethod
    def build(cls, files, # audio files, in the order of the index
              cfg:SpecConfig, # spectrogram settings
              duration:float, # every clip is centre-cropped / padded to this length (s), as at validation
              wave_norm:bool=False, # apply `AudioNormalize` to each clip first
              dest=None, # cache folder; default: $FASTNORM_HOME/cache/<key>
              bs:int=32, # clips per spectrogram batch
              progress:bool=True, # show a fastprogress bar
             )->SpecCache:
        "Compute (or reuse, when the files and settings are unchanged) the spectrograms of `files`"
        files = [str(f) for f in files]
        if not files: raise ValueError("`files` is empty: nothing to cache")
        twice = pd.Series(files)[pd.Series(files).duplicated()]
        if len(twice): raise ValueError(f"`files` lists {twice.iloc[0]} more than once: a cache holds each file once")
        check_positive('duration', duration)
        bs = check_int('bs', bs, lo=1)
        key = cls.key(files, cfg, duration, wave_norm)
        dest = Path(dest) if dest is not None else fastnorm_home()/'cache'/key
        if (dest/'meta.json').is_file():
            try:
                c = cls(dest)
                if c.meta['key'] == key: return c.check()
            except (CacheError, FileNotFoundError) as e:  # ours, damaged: made again
                warnings.warn(f"Rebuilding the feature cache in {dest}: {e}")
        elif dest.exists() and any(dest.iterdir()):
            raise FileExistsError(f"{dest} exists and is not a fastnorm feature cache: choose another `dest`")
        n = int(round(duration*cfg.sr))
        shape = (len(files), 1, cfg.n_freq, cfg.n_frames(n))
        need = 4 * int(np.prod(shape)) + 3 * 8 * int(np.prod(shape[:3])) + sum(len(f) + 8 for f in files) + (1 << 16)
        with explain_full_disk(dest, need), atomic_dir(dest) as tmp:  # a failure removes `tmp`
            tfms = (AudioCropPad(duration), AudioNormalize(), MelSpec(cfg=cfg))
            mm = np.lib.format.open_memmap(tmp/'data.npy', mode='w+', dtype=np.float32, shape=shape)
            reserve(tmp/'data.npy', name=dest/'data.npy')  # before any write: a page the disk cannot hold is a SIGBUS
            st = dict(count=np.full(shape[:3], float(shape[3])), mean=np.empty(shape[:3]), m2=np.empty(shape[:3]))
            starts = range(0, len(files), bs)
            for s in (progress_bar(starts) if progress else starts):
                waves = [AudioTensor.create(f, sr=cfg.sr) for f in files[s:s+bs]]
                sp = _make_specs(waves, cfg, duration, wave_norm, tfms)
                mm[s:s+len(sp)] = sp.numpy()
                st['mean'][s:s+len(sp)], st['m2'][s:s+len(sp)] = (a.numpy() for a in time_stats(sp))
            mm.flush()
            del mm
            np.savez(tmp/'stats.npz', **st)
            pd.DataFrame(dict(file=files, row=range(len(files)))).to_csv(tmp/'index.csv', index=False)
            meta = dict(key=key, cfg=cfg.to_dict(), duration=duration, wave_norm=wave_norm, shape=list(shape),
                        fmt=CACHE_FORMAT, fastnorm=__version__, files=_files_sha1(files))
            (tmp/'meta.json').write_text(json.dumps({**meta, 'check': _digest(meta)}))
        return cls(dest)

class CachedSpec(Transform):
    "Type transform: an audio file (str or Path) or an `AudioTensor` to its `TensorSpec`: from the cache, or made alike"
    input_types = (str, Path, AudioTensor)  # what `test_dl` and `predict` accept (fastai reads `input_types`)
    def __init__(self, cache:SpecCache): self.cache = cache
    def encodes(self, x)->TensorSpec: return self.cache.spec(x)

def dl_crop(dl)->AudioCropPad|None:
    """The crop/pad that makes the clips of `dl` one length: its feature cache's (the cache's duration, zeros at the
    end), or the last `AudioCropPad` of its item transforms; None if it has neither"""
    tls = getattr(dl.dataset, 'tls', None)
    cache = next((t.cache for t in tls[0].tfms.fs if isinstance(t, CachedSpec)), None) if tls else None
    if cache is not None: return AudioCropPad(cache.duration)
    crops = [t for t in dl.after_item.fs if isinstance(t, AudioCropPad)]
    return crops[-1] if crops else None

class CachedSpecDL(TfmdDL):
    """A `TfmdDL` over a `SpecCacheBlock` dataset: a batch of cached items is one memmap slice; a batch with an item the
    cache lacks (a new file at inference, or a cache not on this machine) goes item by item through `SpecCache.spec`"""
    def _index(self):
        "Cache rows (-1: not cached) and labels of this DataLoader's items, worked out once through the item pipeline"
        ds = self.dataset
        if getattr(self, '_idx_for', None) is not ds:
            fs = list(ds.tls[0].tfms.fs)
            k = next(i for i, f in enumerate(fs) if isinstance(f, CachedSpec))
            self._cache, items, pre = fs[k].cache, ds.tls[0].items, Pipeline(fs[:k])
            keys = [pre(items.iloc[i] if hasattr(items, 'iloc') else items[i]) for i in range(len(ds))]
            self._rows = np.array([self._cache.rows[str(f)] if f in self._cache else -1 for f in keys], dtype=np.int64)
            self._ys = [torch.stack([tl[i] for i in range(len(ds))]) if len(ds) else None for tl in ds.tls[1:]]
            self._idx_for = ds
        return self._rows, self._ys

    @property
    def cache(self)->SpecCache:
        "The `SpecCache` this DataLoader reads"
        self._index()
        return self._cache

    def item_moments(self, idxs=None)->dict|None:
        """Float64 `count`, `mean` and `m2` (sum of squared deviations) over time of items `idxs` (default: all) of the
        dataset, `[len(idxs),C,F]` each, from the cache's per-item statistics without reading a spectrogram; None where
        the cache has none or lacks one of the items"""
        rows, _ = self._index()
        r = rows if idxs is None else rows[np.asarray(list(idxs), dtype=np.int64)]
        st = self._cache.item_stats
        if st is None or (r < 0).any(): return None
        idx = torch.from_numpy(r)
        return {k: st[k].index_select(0, idx) for k in ('count', 'mean', 'm2')}

    def do_item(self, s): return 0 if s is None else s
    def do_batch(self, b):
        rows, ys = self._index()
        idx = np.asarray(b)
        r = rows[idx]
        if (r >= 0).all() and self._cache.available: x = torch.from_numpy(self._cache.data[r])
        else: x = torch.stack([self.dataset.tls[0][int(i)] for i in idx])
        x = TensorSpec(x, cfg=self._cache.cfg)
        return (x, *[y[torch.from_numpy(idx)] for y in ys])

def SpecCacheBlock(cache:SpecCache):
    """A `TransformBlock` whose items are audio file paths and whose inputs are their cached `TensorSpec`s, loaded a
    batch at a time"""
    return TransformBlock(type_tfms=CachedSpec(cache), dl_type=CachedSpecDL)
