"""Adapt a trained learner to a new recording setup (a new microphone, room or speaker) from unlabeled clips recorded
there: band-wise statistics matching on the log-mel (`BandMatch`, Mezza et al. 2020), AdaBN (`adapt_bn`: the network's
BatchNorm statistics re-estimated, Li et al. 2016), or both. `adapt` returns a new learner that `predict`s, exports and
goes to ONNX with the adapted constants inside; the comparison (`fastnorm compare --adapt`) runs the same functions."""
from __future__ import annotations
import copy, math
from pathlib import Path
from typing import NamedTuple
import soundfile as sf, torch
from torch import nn
from fastai.data.load import DataLoader
from fastai.torch_core import retain_type
from fasttransform import Pipeline
from .audio import AudioTensor, AUDIO_EXTS
from .cache import dl_crop
from .spec import TensorSpec
from .stats import StatsRecorder
from .dlstats import stats_pipeline
from .norm import SpecNormalize
from .steps import plain, const
from .checks import check_choice, check_number

__all__ = ['AdaptMethod', 'ADAPT_METHODS', 'MIN_CLIPS', 'BandMatch', 'MatchBands', 'signal_mask', 'band_stats',
           'frame_mask', 'clip_samples', 'adapt_bn', 'adapt']

class AdaptMethod(NamedTuple):
    "What one adaptation method does: statistics matching (`'full'`, `'mean'` or None), then AdaBN or not"
    match:str|None
    bn:bool
    doc:str

# the methods of `adapt` and of `fastnorm compare --adapt` (the CLI's help reads this table)
ADAPT_METHODS = {
    'match': AdaptMethod('full', False, "band-wise statistics matching: per mel bin, the new clips' log-mel mean and "
                                        "std moved to the training set's (std floored)"),
    'mean': AdaptMethod('mean', False, "band-wise mean matching only (match with mean_only): no division by a "
                                       "re-fitted std"),
    'bn': AdaptMethod(None, True, "AdaBN: the network's BatchNorm running statistics (a FreqBatchNorm stem's too) "
                                  "re-estimated on the new clips"),
    'match+bn': AdaptMethod('full', True, "match, then BatchNorm re-estimated on the matched spectrograms"),
    'mean+bn': AdaptMethod('mean', True, "mean, then BatchNorm re-estimated on the matched spectrograms"),
}
MIN_CLIPS = 8  # fewer clips than this cannot estimate one mean and std per mel bin usefully
MATCH_ORDER = 97  # after the spectrogram (`MelSpec`, 5), before PCEN (98) and the normalizations (99)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

FLOOR_TOL = 1e-3  # dB: a value within this of the spectrogram's floor is the floor

def _floor(cfg)->tuple:
    "(floor in dB, top_db) of the log-mels `cfg` makes: `power_to_db`'s clamp at amin 1e-10; (None, None) if not dB"
    if cfg is None or not cfg.db: return None, None
    return -200. / cfg.power, cfg.top_db

def _signal(x, floor:float|None, top_db:float|None):
    "True where `x` is above the floor (each item's `max - top_db`, when it has one), or None without a floor"
    if floor is None: return None
    thr = floor if top_db is None else (x.amax((1, 2, 3), keepdim=True) - top_db).clamp_min(floor)
    return x > thr + FLOOR_TOL

def signal_mask(x:torch.Tensor, # `[B,C,F,T]` log-mel (dB)
                cfg, # the `SpecConfig` that made it (None: every value counts)
               )->torch.Tensor|None:
    """True where the log-mel `x` is signal, False at the spectrogram's floor: the zeros crop/pad added and the digital
    silence in a clip, which `BandMatch` leaves as they are and the statistics leave out; None if `cfg` has no floor"""
    return _signal(plain(x), *_floor(cfg))

def _match(x, mean, std, floor, top_db):
    "`BandMatch`'s formula: `(x - mean) / std` where `x` is signal, the floor kept"
    y = (x - mean) / std
    keep = _signal(x, floor, top_db)
    return y if keep is None else torch.where(keep, y, x)

class MatchBands(nn.Module):
    "`BandMatch`'s module (training and export run it): `(x - mean) / std` per mel bin, the spectrogram's floor kept"
    def __init__(self, mean, std, floor:float|None=None, top_db:float|None=None):
        super().__init__()
        self.register_buffer('mean', const(mean))
        self.register_buffer('std', const(std))
        self.floor, self.top_db = floor, top_db
    def forward(self, x): return _match(plain(x), self.mean, self.std, self.floor, self.top_db)

class BandMatch(SpecNormalize):
    """Band-wise statistics matching on the log-mel, before the recipe's own normalization: per mel bin,
    `(x - mean_new) / std_new * std_train + mean_train`, kept as the affine `(x - mean) / std` of `SpecNormalize` with
    `mean = mean_new - mean_train * r`, `std = r`, `r = max(std_new, std_floor * std_train) / std_train` (1 when
    `mean_only`). The floor keeps a band that the new device leaves near silent from being amplified without bound.
    Values at the spectrogram's floor (zero padding, digital silence) stay where they are, as the network saw them in
    training. Fixed constants: nothing is computed in `setups`. `x`: `[B,C,F,T]` log-mel (dB), any device"""
    order, _axes = MATCH_ORDER, (0, 3)
    floor = top_db = None
    @classmethod
    def fit(cls, train:StatsRecorder, # per-bin statistics of the training set's log-mel (`band_stats`)
            new:StatsRecorder, # per-bin statistics of the new clips' log-mel
            std_floor:float=0.25, # `std_new` is at least this fraction of `std_train` (gain at most 1/std_floor)
            mean_only:bool=False, # move the mean only, keep the scale (no division by a re-fitted std)
           )->BandMatch:
        "The matching of `new` onto `train`"
        check_number('std_floor', std_floor, lo=0, lo_open=True)
        if train.kept_shape != new.kept_shape:
            raise ValueError(f"BandMatch: the training statistics (kept shape {list(train.kept_shape)}) and the new "
                             f"clips' ({list(new.kept_shape)}) describe different spectrograms")
        st = train.std.clamp_min(1e-6)
        r = torch.ones_like(st) if mean_only else torch.maximum(new.std, std_floor * st) / st
        seen = (train.count > 0) & (new.count > 0)  # a band that is all floor on either side: left as it is
        r = torch.where(seen, r, torch.ones_like(r))
        tfm = cls(torch.where(seen, new.mean - train.mean * r, torch.zeros_like(r)), r, axes=train.red_dims,
                  cfg=train.cfg)
        tfm.std_floor, tfm.mean_only = std_floor, mean_only
        tfm.floor, tfm.top_db = _floor(train.cfg)
        return tfm
    def to_module(self, cfg=None)->nn.Module:
        "`MatchBands` with this matching's constants (see `fastnorm.steps.InferenceStep`)"
        return MatchBands(self.mean, self.std, self.floor, self.top_db)
    def encodes(self, x:TensorSpec):
        "The matched log-mel; `x`: `[B,C,F,T]`, any device; keeps the type and `cfg`"
        self._check(x)
        return retain_type(_match(plain(x), *self._ms(x), self.floor, self.top_db), x)
    def encodes(self, x:torch.Tensor):
        "Another float batch `[B,C,F,T]` (no spectrogram settings, so no floor): the affine alone; targets pass"
        if not (x.is_floating_point() and x.ndim == 4): return x
        self._check(x)
        return retain_type(_match(plain(x), *self._ms(x), None, None), x)
    @property
    def name(self):
        return f"BandMatch -- {'mean only' if self.mean_only else f'std floor {self.std_floor:g}'}\n"

def clip_samples(item, sr:int)->int|None:
    "Samples of an audio file or `AudioTensor` at `sr`, or None when `item` is neither"
    if isinstance(item, AudioTensor): return math.ceil(item.shape[-1] * sr / getattr(item, 'sr', sr))
    if isinstance(item, (str, Path)):
        info = sf.info(str(item))
        return math.ceil(info.frames * sr / info.samplerate)
    return None

def _items(dl)->list:
    "The items of `dl` in order: files or `AudioTensor`s (a DataFrame's `path` column)"
    items = getattr(dl, 'items', None)
    if items is None: return []
    if hasattr(items, 'columns'): return list(items['path']) if 'path' in items.columns else []
    return list(items)

def frame_mask(n_clip:torch.Tensor, # samples of each clip before crop/pad, `[B]`
               n:int, # samples of a clip after crop/pad
               T:int, # frames of its spectrogram
               hop:int, # hop length (samples)
               pad:str='end', # where crop/pad put the zeros: 'end' or 'both'
              )->torch.Tensor:
    """`[B,1,1,T]` bool: True for the frames whose centre lies in the signal, False for those that crop/pad's zeros
    made (a clip at least `n` long is centre-cropped: every frame is signal)"""
    m = n_clip.clamp(max=n)
    left = torch.where(torch.full_like(m, pad == 'both', dtype=torch.bool), (n - m) // 2, torch.zeros_like(m))
    centre = torch.arange(T, device=m.device) * hop
    keep = (centre[None] >= left[:, None] - hop // 2) & (centre[None] < (left + m)[:, None])
    return keep[:, None, None, :]

def band_stats(dl, # a fastai `DataLoader` of the clips (their labels unused)
               mask_padding:bool=True, # leave out the frames that crop/pad added (needs the items' files or tensors)
              )->StatsRecorder:
    """Per mel bin mean and std (`[1,C,F,1]`) of the log-mel that `dl` makes, at the point `BandMatch` sits: after
    the spectrogram, before PCEN and the normalizations, no augmentation; read in order, every item once"""
    d = dl.new(shuffle=False, drop_last=False) if hasattr(dl, 'new') else dl
    pipe, crop, items = Pipeline(stats_pipeline(d, MATCH_ORDER)), dl_crop(d), _items(d)
    rec, k = StatsRecorder((0, 3)), 0
    d.after_batch = Pipeline([])
    with torch.no_grad():
        for b in d:
            x = pipe(b[0])
            B, mask = x.shape[0], None
            cfg = getattr(x, 'cfg', None)
            sizes = [clip_samples(i, cfg.sr) for i in items[k:k + B]] if mask_padding and crop and cfg else []
            if len(sizes) == B and None not in sizes:
                n = int(round(crop.duration * cfg.sr))
                mask = frame_mask(torch.tensor(sizes, device=x.device), n, x.shape[-1], cfg.hop_length, crop.pad)
            sig = signal_mask(x, cfg)
            if sig is not None: mask = sig if mask is None else sig & mask
            rec.update(x, mask=mask)
            k += B
    if rec.kept_shape is None: raise ValueError("band_stats: the DataLoader gave no batch")
    return rec

def adapt_bn(model:nn.Module, # a trained network; its BatchNorm layers' running statistics are replaced
             batches, # an iterable of input batches (the network's inputs, after every batch transform)
            )->int:
    """AdaBN: every BatchNorm layer's running mean and variance re-estimated on `batches` (a cumulative average over
    them), nothing else changed: no weight, no affine parameter. Returns the number of batches used"""
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns: raise ValueError(f"adapt_bn: {type(model).__name__} has no BatchNorm layer with running statistics")
    was, saved = model.training, [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    k = 0
    try:
        with torch.no_grad():
            for xb in batches:
                model(xb)
                k += 1
    finally:
        for m, mo in zip(bns, saved): m.momentum = mo
        model.train(was)
    if k == 0: raise ValueError("adapt_bn got no batches")
    return k

def _clips_dl(learn, clips, bs:int|None):
    "The clips as a `DataLoader` of the learner's validation pipeline: files, a folder or a `DataLoader` as given"
    if isinstance(clips, DataLoader): return clips
    if isinstance(clips, (str, Path)):
        p = Path(clips)
        if not p.exists(): raise FileNotFoundError(f"adapt: clips folder or file not found: {p}")
        clips = sorted(f for f in p.rglob('*') if f.suffix.lower() in AUDIO_EXTS) if p.is_dir() else [p]
    clips = list(clips)
    missing = [str(c) for c in clips if isinstance(c, (str, Path)) and not Path(c).is_file()]
    if missing: raise FileNotFoundError(f"adapt: {len(missing)} clip file(s) not found, e.g. {missing[0]}")
    return learn.dls.test_dl(clips, bs=bs or learn.dls.bs)

def _train_stats(learn, mask_padding:bool)->StatsRecorder:
    """The training set's per-bin log-mel statistics: from its DataLoader when the learner still has it, else from a
    per-bin normalization sitting right on the log-mel"""
    dl = learn.dls.train
    if len(dl.dataset): return band_stats(dl, mask_padding)
    fs = [t for t in dl.after_batch.fs if getattr(t, 'order', 0) >= MATCH_ORDER and getattr(t, 'split_idx', None) != 0]
    first = fs[0] if fs else None
    if isinstance(first, SpecNormalize) and first.mean is not None and first.mean.shape[-2] > 1:
        return StatsRecorder.from_moments(torch.ones_like(first.mean), first.mean, first.std ** 2, red_dims=(0, 3),
                                          cfg=first.cfg)
    raise ValueError("adapt: this learner has no training data (a learner loaded from `learn.export()`) and no "
                     "per-bin statistics of it: pass `train_stats` (e.g. `band_stats(dls.train)` of its training "
                     "DataLoaders, saved with `.save()`), or adapt it with method='bn'")

def _clone(learn):
    "A deep copy of `learn` whose loaders have their own `after_batch` (the data itself is shared, not copied)"
    dls = copy.copy(learn.dls)
    dls.loaders = [copy.copy(dl) for dl in learn.dls.loaders]
    for dl in dls.loaders: dl.after_batch = Pipeline(list(dl.after_batch.fs), split_idx=dl.after_batch.split_idx)
    return copy.deepcopy(learn, memo={id(learn.dls): dls})

def _insert(learn, tfm):
    "Put `tfm` into every loader's `after_batch` (in its order)"
    for dl in learn.dls.loaders: dl.after_batch = Pipeline(list(dl.after_batch.fs) + [tfm],
                                                           split_idx=dl.after_batch.split_idx)

def _inputs(learn, dl):
    """The network's input batches for `dl` through `learn`'s validation batch transforms, in near-equal batches (no
    batch of one clip, which BatchNorm cannot re-estimate on)"""
    n, bs = len(dl.dataset), dl.bs or 1
    d = dl.new(shuffle=False, drop_last=False, bs=math.ceil(n / math.ceil(n / bs)))
    d.after_batch = learn.dls.valid.after_batch
    d.to(learn.dls.device)
    return (b[0] for b in d)

def adapt(learn, # a trained `Learner` (left unchanged)
          clips, # unlabeled clips from the new setup: audio files, a folder of them, or a `DataLoader`
          method:str='match', # a key of `ADAPT_METHODS`: 'match', 'mean', 'bn', 'match+bn' or 'mean+bn'
          std_floor:float=0.25, # `match`: a re-fitted std is at least this fraction of the training std
          mean_only:bool=False, # `match`: move the mean only (the same as method 'mean')
          train_stats:StatsRecorder|None=None, # `match`: the training set's per-bin log-mel statistics (`band_stats`)
          mask_padding:bool=True, # statistics leave out the frames that crop/pad added to short clips
          bs:int|None=None, # batch size over the clips (default: the learner's)
         ):
    """A copy of `learn` adapted to the setup `clips` were recorded in, without their labels: `match` inserts a
    `BandMatch` before the recipe's normalization, `bn` re-estimates the network's BatchNorm statistics (`adapt_bn`).
    The copy predicts, exports and goes to ONNX with the adapted constants; `learn.deploy_meta` records the method and
    the number of clips. Clips at another sample rate are resampled as `predict` does"""
    how = ADAPT_METHODS[check_choice('method', method, tuple(ADAPT_METHODS))]
    dl = _clips_dl(learn, clips, bs)
    n = len(dl.dataset)
    if n < MIN_CLIPS:
        raise ValueError(f"adapt needs at least {MIN_CLIPS} unlabeled clips from the new setup to estimate its "
                         f"statistics ({n} given)")
    new = _clone(learn)
    if how.match:
        train = train_stats if train_stats is not None else _train_stats(learn, mask_padding)
        _insert(new, BandMatch.fit(train.to(learn.dls.device or 'cpu'), band_stats(dl, mask_padding), std_floor,
                                   mean_only or how.match == 'mean'))
    if how.bn: adapt_bn(new.model, _inputs(new, dl))
    new.deploy_meta = {**getattr(learn, 'deploy_meta', {}), 'adapted': method, 'adapt_clips': str(n)}
    return new
