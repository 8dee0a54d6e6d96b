"""Noise from real recordings for `AddNoise`: the clips of a folder (any folder of audio files, or one in ESC-50's
layout), resampled to one rate, trimmed of digital silence and held in memory as one padded tensor. `split` keeps the
clips used for training and for testing disjoint: by ESC-50 fold, or by a seeded partition of a plain folder."""
from __future__ import annotations
import warnings
from pathlib import Path
import numpy as np, torch
from fastprogress.fastprogress import progress_bar
from .audio import AUDIO_EXTS, load_audio
from .layouts import LAYOUTS, detect_layout
from .checks import check_choice, check_int, check_number

__all__ = ['NOISE_SPLITS', 'noise_files', 'NoiseClips']

NOISE_SPLITS = ('train', 'test', 'all')

def noise_files(path, # a folder of audio files (searched recursively), or one in ESC-50's layout
                split:str='all', # 'train', 'test' or 'all' (every clip)
                test_folds=(5,), # ESC-50 layout: the folds whose clips are test noise
                test_frac:float=0.2, # plain folder: the fraction of clips (at least one) that are test noise
                seed:int=0, # plain folder: the partition's seed; ESC-50 with `per_class`: which clips are picked
                per_class:int|None=None, # ESC-50 layout: keep this many clips per category (AVMNIST's recipe: 1)
               )->list[str]:
    "The noise clips of `split` in `path`, sorted: train and test are disjoint and together make 'all'"
    path = Path(path)
    if not path.is_dir(): raise FileNotFoundError(f"Noise folder not found: {path}")
    check_choice('split', split, NOISE_SPLITS)
    if per_class is not None: per_class = check_int('per_class', per_class, lo=1)
    try: layout = LAYOUTS[detect_layout(path, what='noise folder')[0]]
    except ValueError: layout = None  # no audio at all: said below
    if layout is not None and 'folds' in layout.options:  # split by its folds (ESC-50's); others: a plain folder
        df = layout.items(path)
        folds = layout.folds(df)
        bad = [f for f in test_folds if f not in folds]
        if bad:
            raise ValueError(f"test_folds {list(test_folds)} name fold(s) {bad} that {path} lacks (its folds: {folds})")
        test = df['fold'].isin(list(test_folds))
        if split != 'all': df = df[test if split == 'test' else ~test]
        if len(df) == 0:
            raise ValueError(f"Noise folder {path} has no {split} clips: test_folds {list(test_folds)} hold all of "
                             "them")
        if per_class is not None:  # each category in sorted order draws its picks from one generator
            rng, groups = np.random.default_rng(seed), df.groupby(layout.label_col, sort=True).indices
            picks = [groups[c][np.sort(rng.permutation(len(groups[c]))[:per_class])] for c in sorted(groups)]
            df = df.iloc[np.concatenate(picks)]
        return sorted(df['path'].tolist())
    if per_class is not None:
        raise ValueError(f"`per_class` needs a folder in ESC-50's layout (meta/esc50.csv); {path} is a plain folder")
    files = sorted(str(f) for f in path.rglob('*') if f.suffix.lower() in AUDIO_EXTS and f.is_file())
    if not files: raise ValueError(f"Noise folder {path} holds no audio files ({', '.join(AUDIO_EXTS)})")
    if split == 'all': return files
    if len(files) < 2:
        raise ValueError(f"Noise folder {path} holds {len(files)} clip: a train/test split needs at least 2")
    check_number('test_frac', test_frac, lo=0, hi=1, lo_open=True, hi_open=True)
    n_test = min(len(files) - 1, max(1, int(round(test_frac * len(files)))))
    is_test = np.zeros(len(files), dtype=bool)
    is_test[np.random.default_rng(seed).permutation(len(files))[:n_test]] = True
    return [f for f, t in zip(files, is_test) if t == (split == 'test')]

def _trim(x:torch.Tensor, silence_db:float):
    "`x` `[N]` without its leading and trailing stretches below `silence_db` of its peak; None when it is all silent"
    peak = float(x.abs().max())
    if peak == 0: return None
    loud = (x.abs() > peak * 10 ** (silence_db / 20)).nonzero()[:, 0]
    return x[int(loud[0]):int(loud[-1]) + 1]

class NoiseClips:
    """Noise clips of a folder at `sr`, in memory: `take` cuts each item's noise from a clip, cropped at an offset or
    looped. Clips are mono, trimmed of silence at both ends (ESC-50 pads short recordings with zeros); unreadable or
    silent files are skipped with a warning, and a folder with no usable clip is an error."""
    def __init__(self, path, # a folder of audio files, or one in ESC-50's layout
                 sr:int, # the rate the items have: every clip is resampled to it (Hz)
                 split:str='all', # 'train', 'test' or 'all': see `noise_files`
                 test_folds=(5,), # ESC-50 layout: the folds that are test noise
                 test_frac:float=0.2, # plain folder: the fraction of clips that are test noise
                 seed:int=0, # plain folder: the partition's seed (and ESC-50's `per_class` pick)
                 per_class:int|None=None, # ESC-50 layout: this many clips per category
                 silence_db:float=-60., # trim leading/trailing samples quieter than this, relative to the peak (dB)
                 progress:bool=False, # progress bar while the clips load
                ):
        check_number('silence_db', silence_db, hi=0, hi_open=True)  # relative to the peak: 0 dB would trim it all
        self.path, self.sr, self.split, self.seed = Path(path), check_int('sr', sr, lo=1), split, seed
        files = noise_files(path, split, test_folds, test_frac, seed, per_class)
        clips, kept, skipped = [], [], []
        for f in (progress_bar(files) if progress else files):
            try: x, _ = load_audio(f, sr=self.sr)
            except (ValueError, RuntimeError) as e:  # AudioLoadError is a ValueError
                skipped.append(f'{f} ({e})')
                continue
            x = _trim(x.mean(0), silence_db)
            if x is None:
                skipped.append(f'{f} (silent)')
                continue
            clips.append(x)
            kept.append(f)
        if not clips:
            raise ValueError(f"Noise folder {self.path} has no readable, non-silent audio among its {len(files)} "
                             f"{split} file(s), e.g. {skipped[0]}")
        if skipped: warnings.warn(f"NoiseClips: skipped {len(skipped)} of {len(files)} noise files, e.g. {skipped[0]}")
        self.files, self.skipped = kept, skipped
        self.lengths = torch.tensor([len(c) for c in clips])
        # `[K, longest + padding]`, zero-padded: `take` grows the padding to the batch length it is asked for
        self.clips = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        self._on = {}

    def __len__(self): return len(self.files)
    def __repr__(self):
        return (f"NoiseClips({str(self.path)!r}, sr={self.sr}, split={self.split!r}: {len(self)} clips, "
                f"{float(self.lengths.sum()) / self.sr:.1f} s)")
    def __getstate__(self):  # without the device copies, and without the padding `take` added
        return {**self.__dict__, '_on': {}, 'clips': self.clips[:, :int(self.lengths.max())].clone()}

    def _to(self, device, n:int=0):
        """The clips on `device` with at least `n` samples of zeros after the longest: the padding grows (doubling) in
        `clips` itself, so their own device holds one copy; other devices get one cached copy each"""
        longest = int(self.lengths.max())
        if self.clips.shape[1] < longest + n:
            extra = max(n, 2 * (self.clips.shape[1] - longest))
            self.clips, self._on = torch.nn.functional.pad(self.clips[:, :longest], (0, extra)), {}
        device = torch.device(device)
        if device == self.clips.device: return self.clips
        if device not in self._on: self._on[device] = self.clips.to(device)
        return self._on[device]

    def take(self, idx:torch.Tensor, # `[B]` clip of each item (indices into `files`)
             lengths:torch.Tensor, # `[B]` samples each item needs
             u:torch.Tensor, # `[B]` in [0,1): where each crop starts, as a fraction of the possible offsets
             n:int, # samples of the output (the batch's length)
            )->torch.Tensor:
        """`[B,n]` noise on `idx`'s device: item b gets `lengths[b]` samples of its clip, cropped at an offset when the
        clip is longer and looped from its start when shorter, then zeros. A crop that lands on silence inside a clip
        starts at the clip's (trimmed, so non-silent) beginning instead."""
        dev = idx.device
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"noise clip indices must lie in 0..{len(self) - 1} ({idx.tolist()} given)")
        clips, L = self._to(dev, n), self.lengths.to(dev)[idx]
        m = torch.as_tensor(lengths, device=dev).long()
        # a crop starts at offset u·(L - m + 1) (at most L - m); a clip shorter than the item loops from its start
        crop = (torch.as_tensor(u, device=dev).double() * (L - m + 1)).floor().long()
        off = torch.where(L >= m, torch.minimum(crop, L - m), 0)
        # every item's window of n samples at its offset (the padding keeps it inside), then zeros after its m
        out = clips.unfold(1, n, 1)[idx, off].masked_fill_(torch.arange(n, device=dev) >= m[:, None], 0.)
        for b in (L < m).nonzero()[:, 0].tolist():  # looped
            out[b, :int(m[b])] = clips[int(idx[b]), :int(L[b])].repeat(-(-int(m[b]) // int(L[b])))[:int(m[b])]
        for b in (out.abs().amax(-1) == 0).nonzero()[:, 0].tolist():  # landed on silence inside the clip
            out[b, :int(m[b])] = clips[int(idx[b]), :int(m[b])]  # (a crop is never longer than its clip here)
        return out
