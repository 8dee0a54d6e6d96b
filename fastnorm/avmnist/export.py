"""`export_dataset`: a dataset through one of the AVMNIST schemes into `.npy` files, in batches, resumable, as
`fastnorm export` runs it.

The output folder holds `data.npy` (`[N,H,W]`: `uint8` images, or `float32` dB), `labels.npy` (`[N]` int64, aligned
with it), `export.json` (settings, classes, shape) and `manifest/rows-<first>-<last>.json`, one per batch of rows:
each row's source file, label and noise clip, with the scheme, the seeds and the settings. Work goes into
`<out>.partial/`; a batch counts as done once its manifest is written (after its rows are flushed), and the folder
takes its final name only when every batch is done, so a reader never sees half an export and `resume=True` redoes
only the missing batches. Each batch draws from its own seed (from `seed` and its first row), so a resumed export is
byte for byte the uninterrupted one (on the same device).

`export_dataset` reads top-down: check the arguments, resolve the rows and the noise, compare the settings with an
export to resume, set up `<out>.partial/`, write the missing batches, rename."""
from __future__ import annotations
import hashlib, json, os, re, shutil, warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
import numpy as np, pandas as pd, torch
from fastprogress.fastprogress import progress_bar
from ..audio import AudioTensor, load_audio
from ..checks import check_choice, check_int
from ..spec import SpecConfig, TensorSpec, MelSpec
from ..noise import NoiseClips, NOISE_SPLITS
from ..utils import atomic_path, reserve, explain_full_disk
from .. import __version__
from .items import dataset_items, follow_labels
from .schemes import SCHEMES, NOISE_COLORS, Scheme, scheme_image
from .render import frame_range, resize_frames, resize_rows

__all__ = ['EXPORT_FORMATS', 'parse_size', 'export_dataset']

EXPORT_FORMATS = ('image', 'db')
N_FFT, HOP = 256, 128  # the recipe's NFFT and NFFT - noverlap (50% overlap)
PIXELS = ("round(255 * (max - dB) / (max - min)) per item, clipped to 0..255, with max and min over the item's own "
          "spectrogram cells (min at most 120 dB under max): 0 = loudest (black), 255 = quietest (white); "
          "masked cells are white")

def parse_size(size)->tuple:
    "(height, width) from 'HxW', an int (square) or a pair"
    hw = None
    if isinstance(size, str):
        m = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', size)
        hw = (int(m[1]), int(m[2])) if m else None
    elif isinstance(size, int) and not isinstance(size, bool):
        hw = (size, size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        hw = tuple(size)
    if hw is None or min(hw) < 1:
        raise ValueError(f"`size` must be HEIGHTxWIDTH with positive integers, e.g. '112x112' ({size!r} given)")
    return hw

def _sha1(strings)->str: return hashlib.sha1('\n'.join(strings).encode()).hexdigest()

def _batch_seed(seed:int, row:int)->int:
    "The seed of the batch starting at `row`: independent of every other batch, so a resumed export draws the same"
    return int(np.random.SeedSequence([int(seed), int(row)]).generate_state(1, np.uint64)[0] >> 1)

GROUP = 64  # a batch is computed in groups of this many clips of similar length, so little of it is padding
CACHE_SAMPLES = 1 << 26  # decoded clips kept for reuse (256 MB of float32): AVMNIST's 60,000 rows reuse ~1,600 clips

class _Clips:
    "Decoded mono clips at `sr` by path, kept (up to `CACHE_SAMPLES` samples in all) for the rows that reuse them"
    def __init__(self, sr:int):
        self.sr, self.kept, self.n = sr, {}, 0
    def __call__(self, path):
        x = self.kept.get(path)
        if x is None:
            x = load_audio(path, sr=self.sr)[0][0]
            if self.n + len(x) <= CACHE_SAMPLES:
                self.kept[path], self.n = x, self.n + len(x)
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


def _mixes_noise(scheme:str)->bool: return 'snr_db' in SCHEMES[scheme]

# ---- the phases of `export_dataset`, in the order it runs them

def _check_args(scheme, format, mels, color, split, size, sr, seed, bs)->tuple:
    "(height, width), `sr`, `seed` and `bs`, checked: a bad argument fails here, before any file is read"
    check_choice('scheme', scheme, tuple(SCHEMES))
    check_choice('format', format, EXPORT_FORMATS)
    if mels and format != 'db': raise ValueError("`mels` applies to format='db' only")
    check_choice('color', color, NOISE_COLORS)
    check_choice('split', split, NOISE_SPLITS)
    sr = None if sr is None else check_int('sr', sr, lo=1)
    return parse_size(size), sr, check_int('seed', seed), check_int('bs', bs, lo=1)

def _check_free(out:Path, part:Path, resume:bool):
    "Without `resume`, neither `out` nor its `.partial` may exist"
    if resume: return
    if out.exists():
        raise FileExistsError(f"{out} exists: use --resume (resume=True) to complete or reuse it, or another `out`")
    if part.exists():
        raise FileExistsError(f"Interrupted export in {part}: continue it with --resume (resume=True), or delete it")

def _rows(data, labels, split:str, test_fold:int, seed:int)->tuple:
    "(items, classes, source): the rows to export, their class names, and the settings that say where they came from"
    items, classes, layout = dataset_items(data, split, test_fold, seed)
    name = None
    if labels is not None:
        name = str(labels) if isinstance(labels, (str, Path)) else 'labels'
        items = follow_labels(labels, items, classes)
    source = dict(data=str(Path(data).resolve()) if data is not None else 'synth', layout=layout, split=split,
                  test_fold=test_fold, labels=name)
    return items, classes, source

def _read_json(f:Path, what:str)->dict:
    "A JSON object fastnorm wrote (`what` it is, for the message); damaged, it is a ValueError naming it"
    try: d = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not the {what} fastnorm writes ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict): raise ValueError(f"{f} is not the {what} fastnorm writes: a {type(d).__name__}")
    return d

def _noise_clips(noise, scheme:str, rate:int, split:str, test_fold:int, seed:int, per_class)->NoiseClips|None:
    "The recorded noise `scheme` mixes in, at `rate`; None for coloured noise, or for a scheme that mixes none"
    if not _mixes_noise(scheme):
        if noise is not None: warnings.warn(f"scheme {scheme!r} mixes no noise: the noise folder {noise} is not used")
        return None
    if noise is not None and not isinstance(noise, NoiseClips):
        noise = NoiseClips(noise, rate, split=split, test_folds=(test_fold,), seed=seed, per_class=per_class)
    if noise is not None and noise.sr != rate:
        raise ValueError(f"The noise clips are at sr={noise.sr} Hz but the export runs at sr={rate} Hz")
    return noise

def _recorded_settings(folder:Path)->dict|None:
    "The settings in `folder`/export.json; None without one"
    if not (folder/'export.json').is_file(): return None
    old = _settings(_read_json(folder/'export.json', 'export.json'))
    if old is None:
        raise ValueError(f"{folder/'export.json'} has no settings (a JSON object): it is not one fastnorm wrote")
    return old

def _settings(d:dict)->dict|None:
    "The settings of export.json or a manifest `d`; None without them"
    old = d.get('settings')
    if not isinstance(old, dict): return None
    # an earlier fastnorm wrote the dataset's layout as 'kind': such an export still resumes
    if 'kind' in old and 'layout' not in old: old['layout'] = old.pop('kind')
    return old

def _check_same(folder:Path, settings:dict):
    "Refuse `folder` unless it is an export made with `settings`"
    old = _recorded_settings(folder)
    if old is None: raise FileExistsError(f"{folder} exists and is not a fastnorm export: choose another `out`")
    diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if diff:
        what = ', '.join(f'{k}: {old.get(k)!r} there, {settings.get(k)!r} now' for k in diff[:4])
        raise ValueError(f"{folder} was made with other settings ({what}): use the same arguments to resume, "
                         "or another `out`")

def _check_arrays(folder:Path, n:int, hw:tuple, dtype, ys:np.ndarray):
    "data.npy `[n,H,W]` of `dtype` in C order and labels.npy equal to `ys` in `folder`, or an error naming the file"
    f = folder/'data.npy'
    try: a = np.load(f, mmap_mode='r', allow_pickle=False)
    except Exception as e:  # a header numpy cannot parse, a file cut short, missing
        raise ValueError(f"{f} is not a .npy array numpy can map ({type(e).__name__}: {e}): the export in {folder} "
                         "is damaged; delete it and export again") from None
    if a.shape != (n, *hw) or a.dtype != np.dtype(dtype) or not a.flags.c_contiguous:
        raise ValueError(f"{f} holds {a.dtype} {list(a.shape)}, not {np.dtype(dtype).name} {[n, *hw]} in C order: "
                         f"the export in {folder} is damaged; delete it and export again")
    del a
    f = folder/'labels.npy'
    try: got = np.load(f, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{f} is not a .npy array numpy can read ({type(e).__name__}: {e}): the export in {folder} "
                         "is damaged; delete it and export again") from None
    if not (isinstance(got, np.ndarray) and got.shape == ys.shape and (got == ys).all()):
        raise ValueError(f"{f} does not hold the labels of these rows: the export in {folder} is damaged; delete it "
                         "and export again")

def _check_out(out:Path, part:Path, resume:bool, settings:dict)->bool:
    "Refuse an output that exists without `resume`, or one made with other settings; True when `out` is complete"
    _check_free(out, part, resume)
    if out.exists():
        _check_same(out, settings)
        return True
    if part.exists():
        ours = {p.name for p in part.iterdir() if not p.name.startswith('.')} <= {'data.npy', 'labels.npy', 'manifest'}
        if (part/'export.json').is_file(): _check_same(part, settings)
        elif ours and not any((part/'manifest').glob('*.json')): shutil.rmtree(part)  # stopped while being set up
        else: raise FileExistsError(f"{part} exists and is not a fastnorm export: choose another `out`")
    return False

def _device(device)->torch.device:
    "`device`; None: CUDA when available, else the CPU"
    return torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))

@dataclass
class _Export:
    "One export's resolved inputs and the `settings` that identify it; `set_up` and `run` write it into a folder"
    items:pd.DataFrame # `path`, `label`: one output row each, in order
    classes:list # the class names, for export.json
    source:dict # the settings that say where the rows came from: data, layout, split, test_fold, labels
    scheme:str # a key of `SCHEMES`
    noise:NoiseClips|None # recorded noise; None: coloured noise of `color` (or a scheme that mixes none)
    color:str # 'pink' or 'white'
    hw:tuple # (height, width) of a row
    format:str # one of `EXPORT_FORMATS`
    mels:bool # 'db' only: mel bands
    rate:int # the sample rate everything runs at (Hz)
    seed:int
    bs:int # rows per batch

    def __post_init__(self):
        self.paths, self.ys = self.items['path'].tolist(), self.items['label'].to_numpy(np.int64)
        self.n, nc = len(self.paths), self.noise
        self.dtype = np.uint8 if self.format == 'image' else np.float32
        # row r mixes clip perm[r % K]: each clip once before any twice, in an order set by the seed
        self.perm = None if nc is None else np.random.default_rng(self.seed).permutation(len(nc))
        self.settings = dict(**self.source, items=_sha1(self.paths), scheme=self.scheme,
                             noise=None if nc is None else str(nc.path),
                             noise_files=None if nc is None else _sha1(nc.files),
                             color=self.color if _mixes_noise(self.scheme) and nc is None else None,
                             size=list(self.hw), format=self.format, mels=bool(self.mels), sr=self.rate,
                             n_fft=N_FFT, hop=HOP, seed=self.seed, bs=self.bs)

    def head(self)->dict:
        "What export.json holds: the settings, the array's shape and type, the classes, how to read a row"
        image = self.format == 'image'
        return dict(settings=self.settings, shape=[self.n, *self.hw], dtype=np.dtype(self.dtype).name,
                    classes=self.classes, n_rows=self.n, scheme_params=SCHEMES[self.scheme], fastnorm=__version__,
                    orientation='row 0 = highest frequency (as drawn)' if image else 'row 0 = lowest frequency',
                    pixels=PIXELS if image else None)

    def set_up(self, part:Path):
        "Make `part` a new export's folder: data.npy allocated and labels.npy, then export.json, which marks it set up"
        (part/'manifest').mkdir(parents=True, exist_ok=True)
        if (part/'export.json').is_file():  # set up by the export this one resumes
            return _check_arrays(part, self.n, self.hw, self.dtype, self.ys)
        with atomic_path(part/'data.npy') as p:
            np.lib.format.open_memmap(p, mode='w+', dtype=self.dtype, shape=(self.n, *self.hw)).flush()
            reserve(p, name=part/'data.npy')  # rows go in through a memmap: a page the disk cannot hold is a SIGBUS
        with explain_full_disk(part/'labels.npy', self.ys.nbytes + 128), atomic_path(part/'labels.npy') as p:
            np.save(p, self.ys)
        with explain_full_disk(part/'export.json', 1 << 16), atomic_path(part/'export.json') as p:
            p.write_text(json.dumps(self.head(), indent=1))

    def manifest(self, part:Path, first:int)->Path:
        "The manifest of the batch whose first row is `first`"
        return part/'manifest'/f'rows-{first:08d}-{min(first + self.bs, self.n) - 1:08d}.json'

    def done(self, part:Path, first:int)->bool:
        """Whether the batch from row `first` is written: its manifest is there and says so (its rows, these settings).
        A manifest that does not (damaged, edited, another export's) is removed with a warning: the batch is redone"""
        f = self.manifest(part, first)
        if not f.is_file(): return False
        try: m = _read_json(f, 'manifest')
        except ValueError as e: m = e
        if isinstance(m, dict) and m.get('rows') == [first, min(first + self.bs, self.n)] and \
                _settings(m) == self.settings:
            return True
        warnings.warn(f"{f} is not this export's manifest of rows {first}..{min(first + self.bs, self.n) - 1}"
                      f"{f' ({m})' if isinstance(m, Exception) else ''}: that batch is written again")
        f.unlink()
        return False

    def run(self, part:Path, device:torch.device, progress:bool=True, on_batch=None):
        "Compute and write every batch of `part` that has no manifest yet, in order; `on_batch(first, end)` after each"
        todo = [s for s in range(0, self.n, self.bs) if not self.done(part, s)]
        # on the CPU two batches are computed at a time, one torch thread each (small ops gain little from threads
        # inside one op); each in-flight batch has its own `Scheme`, reseeded from its first row, so the bytes do not
        # depend on this
        workers = 2 if device.type == 'cpu' and torch.get_num_threads() > 1 and len(todo) > 1 else 1
        schemes = [Scheme(self.scheme, self.rate, noise=self.noise, color=self.color, seed=self.seed)
                   for _ in range(workers)]
        load = _Clips(self.rate)
        # batch k + workers is submitted once batch k is computed, so the two never share a `Scheme` at once
        compute = lambda k: self.compute(todo[k], schemes[k % workers], device, load)
        reserve(part/'data.npy')  # a no-op when set_up reserved it; a partial from an earlier fastnorm may be sparse
        mm = np.lib.format.open_memmap(part/'data.npy', mode='r+')
        threads = torch.get_num_threads()
        if workers > 1: torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers) as pool:
                running = [pool.submit(compute, k) for k in range(min(workers, len(todo)))]
                for k in (progress_bar(range(len(todo))) if progress else range(len(todo))):
                    done = running[k].result()
                    running[k] = None  # the future lets go of the rows: they go once written
                    if k + workers < len(todo): running.append(pool.submit(compute, k + workers))
                    end = self.write(mm, part, todo[k], *done, device)
                    if on_batch is not None: on_batch(todo[k], end)
        finally:
            torch.set_num_threads(threads)
        del mm

    def compute(self, first:int, sc:Scheme, device:torch.device, load:_Clips)->tuple:
        "(rows, clips, batch seed) of the batch from row `first`, its draws from `sc` reseeded for this batch"
        xs = [load(p) for p in self.paths[first:first + self.bs]]
        bseed = _batch_seed(self.seed, first)
        sc.reseed(bseed)
        clips = None
        if self.perm is not None:
            clips = torch.as_tensor(self.perm[np.arange(first, first + len(xs)) % len(self.perm)], device=device)
        with torch.no_grad():
            rows = _batch(xs, self.rate, device, lambda x, c: self.render(sc, x, c), clips)
        return rows.cpu().numpy(), clips, bseed

    def render(self, sc:Scheme, x:AudioTensor, clips)->torch.Tensor:
        "`[B,H,W]` rows of a padded group `x`: uint8 images, or float32 dB"
        if self.format == 'image': return scheme_image(x, sc, self.hw, clips)[0]
        return _db_batch(x, sc, self.hw, clips, self.mels)

    def write(self, mm:np.memmap, part:Path, first:int, rows:np.ndarray, clips, bseed:int, device)->int:
        "Rows from `first` into data.npy, flushed before their manifest says they are done; returns the end row"
        end = first + len(rows)
        mm[first:end] = rows
        mm.flush()
        noise = f'{self.color} noise' if _mixes_noise(self.scheme) else None
        if clips is not None: noise = [self.noise.files[i] for i in clips.tolist()]
        man = dict(rows=[first, end], files=self.paths[first:end], labels=self.ys[first:end].tolist(), noise=noise,
                   scheme=self.scheme, scheme_params=SCHEMES[self.scheme], seed=self.seed, batch_seed=bseed,
                   settings=self.settings, device=str(device), fastnorm=__version__)
        text = json.dumps(man)
        with explain_full_disk(self.manifest(part, first), len(text)), atomic_path(self.manifest(part, first)) as p:
            p.write_text(text)
        return end

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
                   on_batch=None, # `on_batch(first, end)` once rows [first, end) and their manifest are written
                  )->Path:
    """Export `data` through `scheme` to `out`: `data.npy` `[N,H,W]`, `labels.npy`, `export.json`, manifests; returns
    it. An exception raised by `on_batch` stops the export after that batch, and `resume=True` completes it."""
    hw, sr, seed, bs = _check_args(scheme, format, mels, color, split, size, sr, seed, bs)
    out = Path(out)
    part = out.with_name(out.name + '.partial')
    _check_free(out, part, resume)  # before the dataset is read
    items, classes, source = _rows(data, labels, split, test_fold, seed)
    rate = sr if sr is not None else load_audio(items['path'].iloc[0])[1]
    noise = _noise_clips(noise, scheme, rate, split, test_fold, seed, noise_per_class)
    job = _Export(items, classes, source, scheme, noise, color, hw, format, mels, rate, seed, bs)
    if _check_out(out, part, resume, job.settings):
        _check_arrays(out, job.n, job.hw, job.dtype, job.ys)
        return out  # complete already, with these settings
    job.set_up(part)
    job.run(part, _device(device), progress, on_batch)
    os.replace(part, out)
    return out
