"""`export_dataset`: a dataset through one of the AVMNIST schemes into `.npy` files, in batches, resumable, as
`fastnorm export` runs it.

The output folder holds `data.npy` (`[N,H,W]`: `uint8` images, or `float32` dB), `labels.npy` (`[N]` int64, aligned
with it), `export.json` (settings, classes, shape) and `manifest/rows-<first>-<last>.json`, one per batch of rows:
each row's source file, label and noise clip, with the scheme, the seeds and the settings. Work goes into
`<out>.partial/`; a batch counts as done once its manifest is written (after its rows are flushed), and the folder
takes its final name only when every batch is done, so a reader never sees half an export and `resume=True` redoes
only the missing batches. Each batch draws from its own seed (from `seed` and its first row), so a resumed export is
byte for byte the uninterrupted one (on the same device)."""
from __future__ import annotations
import hashlib, json, os, re, shutil, warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastprogress.fastprogress import progress_bar
from ..audio import AudioTensor, load_audio
from ..spec import SpecConfig, TensorSpec, MelSpec
from ..data import read_esc50_csv, fsdd_items, folder_items, FSDD_RE
from ..synth import synth_esc50
from ..noise import NoiseClips, NOISE_SPLITS
from .schemes import SCHEMES, Scheme, scheme_image
from .render import frame_range, resize_frames, resize_rows
from ..utils import atomic_path
from .. import __version__

__all__ = ['EXPORT_FORMATS', 'parse_size', 'dataset_items', 'follow_labels', 'export_dataset']

EXPORT_FORMATS = ('image', 'db')
N_FFT, HOP = 256, 128  # the recipe's NFFT and NFFT - noverlap (50% overlap)
PIXELS = ("round(255 * (max - dB) / (max - min)) per item, clipped to 0..255, with max and min over the item's own "
          "spectrogram cells (min at most 120 dB under max): 0 = loudest (black), 255 = quietest (white); "
          "masked cells are white")

def parse_size(size)->tuple:
    "(height, width) from 'HxW', an int (square) or a pair"
    if isinstance(size, str):
        m = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', size)
        hw = (int(m[1]), int(m[2])) if m else None
    elif isinstance(size, int) and not isinstance(size, bool): hw = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size): hw = tuple(size)
    else: hw = None
    if hw is None or min(hw) < 1:
        raise ValueError(f"`size` must be HEIGHTxWIDTH with positive integers, e.g. '112x112' ({size!r} given)")
    return hw

def _is_fsdd(p:Path)->bool: return any(FSDD_RE.match(f.name) for f in p.glob('*.wav'))

def dataset_items(data=None, # a folder in FSDD's, ESC-50's or class folders' layout; None: the embedded dataset
                  split:str='all', # 'train', 'test' or 'all'
                  test_fold:int=5, # ESC-50 layout: the test fold
                  seed:int=0, # class folders without train/valid: the seed of the 20% test partition
                 )->tuple:
    """(items, classes, kind): a DataFrame of `path` and integer `label` (sorted by path) for `split`, the class names,
    and 'fsdd', 'esc50' or 'folders'. FSDD: the label is the digit, takes 0-4 are test (AVMNIST's split); ESC-50:
    `target`, fold `test_fold` is test; class folders: sorted folder names, `valid/` (or a seeded 20%) is test."""
    if split not in NOISE_SPLITS: raise ValueError(f"`split` must be one of {NOISE_SPLITS} ({split!r} given)")
    p = synth_esc50() if data is None else Path(data)
    if not p.is_dir(): raise FileNotFoundError(f"Dataset folder not found: {p}")
    if (p/'meta'/'esc50.csv').is_file():
        df = read_esc50_csv(p)
        folds = sorted(df['fold'].unique().tolist())
        if test_fold not in folds: raise ValueError(f"test_fold {test_fold!r} does not exist: {p} has folds {folds}")
        names = df.drop_duplicates('target').set_index('target')['category']
        classes = [str(names.get(i, i)) for i in range(int(df['target'].max()) + 1)]
        df = pd.DataFrame(dict(path=df['path'], label=df['target'].astype(int), test=df['fold'] == test_fold))
        kind = 'esc50'
    elif _is_fsdd(p) or (p/'recordings').is_dir() and _is_fsdd(p/'recordings'):
        f = fsdd_items(p if _is_fsdd(p) else p/'recordings')
        df = pd.DataFrame(dict(path=f['path'], label=f['label'].astype(int), test=f['take'] < 5))
        classes, kind = [str(i) for i in range(10)], 'fsdd'
    else:
        f = folder_items(p)
        classes = sorted(f['label'].unique())
        test = f['is_valid'].values
        if not test.any():
            test = np.zeros(len(f), dtype=bool)
            test[np.random.default_rng(seed).permutation(len(f))[:max(1, round(.2 * len(f)))]] = True
        df = pd.DataFrame(dict(path=f['path'], label=f['label'].map(classes.index).astype(int), test=test))
        kind = 'folders'
    if split != 'all': df = df[df['test'] == (split == 'test')]
    if len(df) == 0: raise ValueError(f"{p} has no items in split {split!r}")
    return df.sort_values('path')[['path', 'label']].reset_index(drop=True), classes, kind

def follow_labels(labels:np.ndarray, # `[N]` integer labels to follow (e.g. AVMNIST's train_labels.npy)
                  items:pd.DataFrame, # `path`, `label`
                  classes=None, # class names, for messages
                  name:str='labels', # where the labels came from, for messages
                 )->pd.DataFrame:
    "One item per label, cycling through each label's items in order (the AVMNIST recipe): the k-th use of a label, mod"
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integer labels "
                         f"(shape {labels.shape}, dtype {labels.dtype} given)")
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

def _sha1(strings)->str: return hashlib.sha1('\n'.join(strings).encode()).hexdigest()

def _batch_seed(seed:int, row:int)->int:
    "The seed of the batch starting at `row`: independent of every other batch, so a resumed export draws the same"
    return int(np.random.SeedSequence([int(seed), int(row)]).generate_state(1, np.uint64)[0] >> 1)

GROUP = 64  # a batch is computed in groups of this many clips of similar length, so little of it is padding
CACHE_SAMPLES = 1 << 26  # decoded clips kept for reuse (256 MB of float32): AVMNIST's 60,000 rows reuse ~1,600 clips

class _Clips:
    "Decoded mono clips at `sr` by path, kept (up to `CACHE_SAMPLES` samples in all) for the rows that reuse them"
    def __init__(self, sr:int): self.sr, self.kept, self.n = sr, {}, 0
    def __call__(self, path):
        x = self.kept.get(path)
        if x is None:
            x = load_audio(path, sr=self.sr)[0][0]
            if self.n + len(x) <= CACHE_SAMPLES: self.kept[path], self.n = x, self.n + len(x)
        return x

def _padded(xs, sr, device):
    "A padded `AudioTensor` `[B,1,N]` at `sr` with `lengths`, on `device`"
    n = -(-max(len(v) for v in xs) // 128) * 128  # a multiple of 128 samples: the energy sums and frames need no copy
    x = torch.nn.utils.rnn.pad_sequence([*xs, xs[0].new_zeros(n)], batch_first=True)[:-1, None].to(device)
    return AudioTensor(x, sr=sr, lengths=torch.tensor([len(v) for v in xs], device=device))

def _batch(xs, sr, device, render, clips=None):
    "`render(x, clips)` over groups of `xs` (1-D tensors) sorted by length; rows come back in the order of `xs`"
    order = sorted(range(len(xs)), key=lambda i: len(xs[i]))
    out = None
    for g in range(0, len(order), GROUP):
        idx = order[g:g + GROUP]
        rows = render(_padded([xs[i] for i in idx], sr, device), None if clips is None else clips[idx])
        if out is None: out = rows.new_empty((len(xs), *rows.shape[1:]))
        out[torch.tensor(idx, device=rows.device)] = rows
    return out

def _db_batch(x, scheme, size, clips, mels):
    "`[B,H,W]` float32 dB at fastnorm's settings (centred STFT, periodic Hann): H mel bands, or linear rows to H"
    y = scheme.wave(x, clips)
    cfg = SpecConfig(sr=scheme.sr, n_fft=N_FFT, hop_length=HOP, n_mels=size[0] if mels else None)
    s = MelSpec(cfg=cfg)(AudioTensor(y.as_subclass(torch.Tensor).mean(1, keepdim=True), sr=scheme.sr))
    nf = (x.lengths.to(s.device) // HOP + 1).clamp(max=s.shape[-1])
    lo, _ = frame_range(s, nf)
    s = scheme.spec(TensorSpec(resize_frames(s, nf, size[1]), cfg=cfg), floor=lo)
    return (s if mels else resize_rows(s, size[0])).as_subclass(torch.Tensor)[:, 0]

def _check_out(out:Path, part:Path, resume:bool, settings:dict):
    "Refuse an output that exists without `resume`, or one made with other settings; True when `out` is complete"
    def same(folder):
        old = json.loads((folder/'export.json').read_text())['settings'] if (folder/'export.json').is_file() else None
        if old is None: raise FileExistsError(f"{folder} exists and is not a fastnorm export: choose another `out`")
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            what = ', '.join(f'{k}: {old.get(k)!r} there, {settings.get(k)!r} now' for k in diff[:4])
            raise ValueError(f"{folder} was made with other settings ({what}): use the same arguments to resume, "
                             "or another `out`")
    _check_free(out, part, resume)
    if out.exists():
        same(out)
        return True
    if part.exists():
        ours = {p.name for p in part.iterdir() if not p.name.startswith('.')} <= {'data.npy', 'labels.npy', 'manifest'}
        if (part/'export.json').is_file(): same(part)
        elif ours and not any((part/'manifest').glob('*.json')): shutil.rmtree(part)  # stopped while being set up
        else: raise FileExistsError(f"{part} exists and is not a fastnorm export: choose another `out`")
    return False

def _check_free(out:Path, part:Path, resume:bool):
    "Without `resume`, neither `out` nor its `.partial` may exist"
    if resume: return
    if out.exists():
        raise FileExistsError(f"{out} exists: use --resume (resume=True) to complete or reuse it, or another `out`")
    if part.exists():
        raise FileExistsError(f"Interrupted export in {part}: continue it with --resume (resume=True), or delete it")

def export_dataset(out, # folder to write (data.npy, labels.npy, export.json, manifest/)
                   data=None, # dataset folder (FSDD, ESC-50 or class folders layout); None: the embedded dataset
                   labels=None, # `.npy` file (or array) of integer labels to follow, cycling through each label's items
                   scheme:str='burst_noise', # one of `SCHEMES`
                   noise=None, # folder of noise clips (or ESC-50's layout), or a `NoiseClips`; None: coloured noise
                   split:str='all', # 'train', 'test' or 'all': the items and the noise clips (train and test disjoint)
                   size='112x112', # HEIGHTxWIDTH of each row
                   format:str='image', # 'image': uint8 `gray_r` picture; 'db': float32 dB (rows from low to high)
                   mels:bool=False, # 'db' only: HEIGHT mel bands instead of linear-frequency dB resized to HEIGHT rows
                   color:str='pink', # coloured noise without `noise`: 'pink' or 'white'
                   noise_per_class:int|None=None, # ESC-50 noise: clips per category (AVMNIST's recipe: 1); None: all
                   test_fold:int=5, # ESC-50 layout (data and noise): the test fold
                   sr:int|None=None, # resample everything to this rate (Hz); None: the first item's rate
                   seed:int=0, # the same seed gives the same bytes
                   bs:int=256, # rows per batch (and per manifest)
                   device=None, # where the batches are computed; None: CUDA when available, else the CPU
                   resume:bool=False, # complete an interrupted export in `out` (or accept a complete one like it)
                   progress:bool=True, # progress bar
                  )->Path:
    "Export `data` through `scheme` to `out`: `data.npy` `[N,H,W]`, `labels.npy`, `export.json`, manifests; returns it"
    # ---- every argument checked before any work
    if scheme not in SCHEMES: raise ValueError(f"Unknown scheme {scheme!r}: choose from {', '.join(SCHEMES)}")
    if format not in EXPORT_FORMATS: raise ValueError(f"`format` must be one of {EXPORT_FORMATS} ({format!r} given)")
    if mels and format != 'db': raise ValueError("`mels` applies to format='db' only")
    if color not in ('white', 'pink'): raise ValueError(f"`color` must be 'white' or 'pink' ({color!r} given)")
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ValueError(f"`bs` must be a positive integer ({bs!r} given)")
    if split not in NOISE_SPLITS: raise ValueError(f"`split` must be one of {NOISE_SPLITS} ({split!r} given)")
    hw = parse_size(size)
    out = Path(out)
    part = out.with_name(out.name + '.partial')
    _check_free(out, part, resume)
    items, classes, kind = dataset_items(data, split, test_fold, seed)
    lname = None
    if labels is not None:
        lname = str(labels) if isinstance(labels, (str, Path)) else 'labels'
        if isinstance(labels, (str, Path)):
            if not Path(labels).is_file(): raise FileNotFoundError(f"Labels file not found: {labels}")
            labels = np.load(labels)
        items = follow_labels(labels, items, classes, name=f"labels file {lname}" if lname != 'labels' else 'labels')
    rate = int(sr) if sr is not None else load_audio(items['path'].iloc[0])[1]
    if rate <= 0: raise ValueError(f"`sr` must be a positive sample rate ({sr!r} given)")
    uses_noise = 'snr_db' in SCHEMES[scheme]
    nc = noise if isinstance(noise, NoiseClips) or noise is None or not uses_noise else NoiseClips(
        noise, rate, split=split, test_folds=(test_fold,), seed=seed, per_class=noise_per_class)
    if not uses_noise:
        if noise is not None: warnings.warn(f"scheme {scheme!r} mixes no noise: the noise folder {noise} is not used")
        nc = None
    if nc is not None and nc.sr != rate:
        raise ValueError(f"The noise clips are at sr={nc.sr} Hz but the export runs at sr={rate} Hz")
    paths, ys = items['path'].tolist(), items['label'].to_numpy(np.int64)
    settings = dict(data=str(Path(data).resolve()) if data is not None else 'synth', kind=kind, split=split,
                    test_fold=test_fold, labels=lname, items=_sha1(paths), scheme=scheme,
                    noise=None if nc is None else str(nc.path), noise_files=None if nc is None else _sha1(nc.files),
                    color=color if uses_noise and nc is None else None, size=list(hw), format=format, mels=bool(mels),
                    sr=rate, n_fft=N_FFT, hop=HOP, seed=int(seed), bs=bs)
    if _check_out(out, part, resume, settings): return out
    dev = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
    sch = Scheme(scheme, rate, noise=nc, color=color, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(nc)) if nc is not None else None  # noise of row r: perm[r % K]
    # ---- the work, in <out>.partial
    n, dtype = len(paths), np.uint8 if format == 'image' else np.float32
    shape = (n, *hw)
    (part/'manifest').mkdir(parents=True, exist_ok=True)
    head = dict(settings=settings, shape=list(shape), dtype=np.dtype(dtype).name, classes=classes, n_rows=n,
                scheme_params=SCHEMES[scheme], fastnorm=__version__,
                orientation='row 0 = highest frequency (as drawn)' if format == 'image' else 'row 0 = lowest frequency',
                pixels=PIXELS if format == 'image' else None)
    if not (part/'export.json').is_file():  # a new export: export.json, written last, marks the folder as set up
        with atomic_path(part/'data.npy') as p:
            np.lib.format.open_memmap(p, mode='w+', dtype=dtype, shape=shape).flush()
        with atomic_path(part/'labels.npy') as p: np.save(p, ys)
        with atomic_path(part/'export.json') as p: p.write_text(json.dumps(head, indent=1))
    mm = np.lib.format.open_memmap(part/'data.npy', mode='r+')
    def render(sc, x, clips):
        return scheme_image(x, sc, hw, clips)[0] if format == 'image' else _db_batch(x, sc, hw, clips, mels)
    mname = lambda s, e: part/'manifest'/f'rows-{s:08d}-{e - 1:08d}.json'
    todo = [s for s in range(0, n, bs) if not mname(s, min(s + bs, n)).is_file()]
    load = _Clips(rate)
    # on the CPU, batches are computed two at a time, one torch thread each (small ops gain little inside one op);
    # each in-flight batch has its own `Scheme` reseeded from its first row, so the bytes do not depend on this
    workers = 2 if dev.type == 'cpu' and torch.get_num_threads() > 1 and len(todo) > 1 else 1
    scs = [sch] + [Scheme(scheme, rate, noise=nc, color=color, seed=seed) for _ in range(workers - 1)]

    def compute(k):
        s, sc = todo[k], scs[k % workers]  # batch k + workers starts only after batch k is written
        xs = [load(p) for p in paths[s:min(s + bs, n)]]
        bseed = _batch_seed(seed, s)
        sc.reseed(bseed)
        clips = torch.as_tensor(perm[np.arange(s, s + len(xs)) % len(perm)], device=dev) if perm is not None else None
        with torch.no_grad(): rows = _batch(xs, rate, dev, lambda x, c: render(sc, x, c), clips)
        return rows.cpu().numpy(), clips, bseed

    threads = torch.get_num_threads()
    if workers > 1: torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers) as pool:
            running = [pool.submit(compute, k) for k in range(min(workers, len(todo)))]
            for k in (progress_bar(range(len(todo))) if progress else range(len(todo))):
                rows, clips, bseed = running[k].result()
                if k + workers < len(todo): running.append(pool.submit(compute, k + workers))
                s = todo[k]
                e = min(s + bs, n)
                mm[s:e] = rows
                mm.flush()  # the rows are on disk before the manifest says they are done
                noises = f'{color} noise' if uses_noise else None
                if clips is not None: noises = [nc.files[i] for i in clips.tolist()]
                man = dict(rows=[s, e], files=paths[s:e], labels=ys[s:e].tolist(), noise=noises, scheme=scheme,
                           scheme_params=SCHEMES[scheme], seed=int(seed), batch_seed=bseed,
                           settings=settings, device=str(dev), fastnorm=__version__)
                with atomic_path(mname(s, e)) as p: p.write_text(json.dumps(man))
                running[k] = None  # let the rows go
    finally: torch.set_num_threads(threads)
    del mm
    os.replace(part, out)
    return out
