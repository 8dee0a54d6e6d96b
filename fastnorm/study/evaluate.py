"""Evaluation under deployment shifts: the validation clips shifted as waveforms, made into spectrograms once, and the
accuracy of a trained model on them, as trained or adapted to the shifted clips without their labels (`Adapted`)."""
from __future__ import annotations
import copy, math
from typing import NamedTuple
import numpy as np, torch
from fasttransform import Pipeline
from ..audio import load_audio, AudioTensor, AudioNormalize, AudioCropPad
from ..spec import MelSpec, TensorSpec
from ..stats import StatsRecorder
from ..adapt import ADAPT_METHODS, BandMatch, adapt_bn, clip_samples, frame_mask, signal_mask
from .datasets import spec_cache
from .shift import Shift

__all__ = ['Adapted', 'cross_fit', 'ShiftedValid']

STD_FLOOR = .25  # `BandMatch`'s floor in the comparison (`adapt`'s default)

class Adapted(NamedTuple):
    """An evaluation condition: the validation clips under `shift` (None: unshifted), each half scored by the model
    adapted with `method` (a key of `ADAPT_METHODS`) to the other half, or to `clips` of its clips; its results column
    is `acc@<shift>|<method>`, or `acc@<shift>|<method>/<clips>`"""
    shift:Shift|None
    method:str
    clips:int|None = None
    @property
    def name(self)->str:
        return f"{'none' if self.shift is None else self.shift.name}|{self.method}" + (
            '' if self.clips is None else f'/{self.clips}')
    @property
    def column(self)->str: return f'acc@{self.name}'

def cross_fit(n:int, # clips in the validation set
              seed:int=0, # seeds the split
              clips:int|None=None, # adapt on at most this many clips of the other part(s), the first in seeded order
             )->list:
    """Seeded parts of `range(n)`, `[(scored, adapted_on), ...]`: each part scored once with what was adapted on clips
    outside it, so no clip is scored by statistics it helped estimate. Two halves, each adapted on the other (or on
    `clips` of it); when `clips` is more than half of `n`, as many parts as leave `clips` outside each (80 clips and
    `clips=64`: 5 parts of 16, each scored as adapted on the other 64)"""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = 2 if clips is None or clips <= n // 2 else min(n, math.ceil(n / max(n - clips, 1)))
    cuts = [n // 2] if k == 2 else [round(j * n / k) for j in range(1, k)]
    parts = [perm[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
    rest = lambda p: [i for i in perm if i not in set(p)]  # the other clips, in seeded order: the first are random
    return [(sorted(p), sorted(rest(p)[:clips])) for p in parts]

class ShiftedValid:
    """The validation set's spectrograms under each shift (made once per shift and waveform normalization, shared by
    all models)"""
    def __init__(self, dls, # a run's cached DataLoaders: their validation items, labels and spectrogram settings
                 shifts, # the `Shift`s and `Adapted` conditions
                 bs:int=64, # clips per chunk
                 seed:int=0, # seeds the halves of the adaptation's cross-fitting
                ):
        cache = spec_cache(dls.valid)
        self.cfg, self.duration, self.shifts, self.bs = cache.cfg, float(cache.meta['duration']), shifts, bs
        self.seed = seed
        self.files = [str(f) for f in dls.valid.items['path']]
        self.y = torch.stack([dls.valid.dataset.tls[1][i] for i in range(len(self.files))])
        self._specs, self._mask = {}, None
    def _make(self, shift, wave_norm:bool)->torch.Tensor:
        "The spectrograms of the validation clips cropped as in training, shifted, then normalized if `wave_norm`"
        crop, tospec, norm, cfg = AudioCropPad(self.duration), MelSpec(cfg=self.cfg), AudioNormalize(), self.cfg
        noise = shift.noise_tfm() if shift is not None and shift.effect == 'noise' else None  # one seeded stream
        out = []
        for s in range(0, len(self.files), self.bs):
            x = torch.stack([crop(AudioTensor(load_audio(f, sr=cfg.sr)[0], sr=cfg.sr), split_idx=1)
                             for f in self.files[s:s+self.bs]])
            if shift is not None: x = AudioTensor(shift(x, cfg.sr, noise=noise), sr=cfg.sr)
            if wave_norm:
                x = norm(x)
            out.append(tospec(x).as_subclass(torch.Tensor))
        return torch.cat(out)
    def specs(self, shift, wave_norm:bool)->torch.Tensor:
        "The validation spectrograms under `shift` (None: unshifted), made on first use"
        key = (None if shift is None else shift.name, wave_norm)
        if key not in self._specs:
            self._specs[key] = self._make(shift, wave_norm)
        return self._specs[key]
    def mask(self, T:int)->torch.Tensor:
        "`[N,1,1,T]`: the frames of each validation clip that are signal, not the padding of a short clip"
        if self._mask is None:
            n = torch.tensor([clip_samples(f, self.cfg.sr) for f in self.files])
            self._mask = frame_mask(n, int(round(self.duration * self.cfg.sr)), T, self.cfg.hop_length, 'end')
        return self._mask
    def _batches(self, X, idx, pipe, dev):
        """(inputs, targets) of clips `idx` of `X` through the batch transforms `pipe`, in near-equal chunks of at most
        `bs` (no chunk of one clip, which BatchNorm cannot re-estimate on)"""
        for k in np.array_split(np.asarray(idx, dtype=np.int64), math.ceil(len(idx) / self.bs)):
            k = torch.from_numpy(k)
            yield pipe((TensorSpec(X[k].to(dev), cfg=self.cfg), self.y[k].to(dev)))
    def _correct(self, model, X, idx, pipe, dev)->int:
        model.eval()
        with torch.no_grad():
            return sum(int((model(xb).argmax(-1) == yb).sum()) for xb, yb in self._batches(X, idx, pipe, dev))
    def accuracy(self, model, dls, shift, wave_norm:bool, train_stats=None)->float:
        """Accuracy of `model` on the shifted validation set, through the validation loader's own batch transforms;
        an `Adapted` condition scores each half as adapted on the other (`train_stats()`: the training set's
        per-bin log-mel statistics, for matching)"""
        if isinstance(shift, Adapted): return self._adapted(model, dls, shift, wave_norm, train_stats)
        X, dev = self.specs(shift, wave_norm), dls.device or torch.device('cpu')
        return self._correct(model, X, list(range(len(X))), dls.valid.after_batch, dev) / len(X)
    def _adapted(self, model, dls, cond:Adapted, wave_norm:bool, train_stats)->float:
        how, X, dev = ADAPT_METHODS[cond.method], self.specs(cond.shift, wave_norm), dls.device or torch.device('cpu')
        pipe, correct = dls.valid.after_batch, 0
        for scored, fit in cross_fit(len(X), self.seed, cond.clips):
            m, p = model, pipe
            if how.match:
                rec = StatsRecorder((0, 3))
                xf, mask = X[fit].to(dev), self.mask(X.shape[-1])[fit].to(dev)
                sig = signal_mask(xf, self.cfg)
                rec.update(xf, mask=mask if sig is None else mask & sig)
                bm = BandMatch.fit(train_stats(), rec, STD_FLOOR, how.match == 'mean')
                p = Pipeline([bm] + list(pipe.fs), split_idx=1)
            if how.bn:
                m = copy.deepcopy(model)
                adapt_bn(m, (xb for xb, _ in self._batches(X, fit, p, dev)))
            correct += self._correct(m, X, scored, p, dev)
        return correct / len(X)
    def accuracies(self, model, dls, shifts, wave_norm:bool, train_stats=None)->dict:
        "A results column per shift or `Adapted` condition of `shifts`: the accuracy of `model` under it"
        return {sh.column: self.accuracy(model, dls, sh, wave_norm, train_stats) for sh in shifts}
