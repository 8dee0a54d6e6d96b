"""Evaluation under deployment shifts: the validation clips shifted as waveforms, made into spectrograms once, and the
accuracy of a trained model on them."""
from __future__ import annotations
import torch
from ..audio import load_audio, AudioTensor, AudioNormalize, AudioCropPad
from ..spec import MelSpec, TensorSpec
from .datasets import spec_cache

__all__ = ['ShiftedValid']

class ShiftedValid:
    """The validation set's spectrograms under each shift (made once per shift and waveform normalization, shared by
    all models)"""
    def __init__(self, dls, # a run's cached DataLoaders: their validation items, labels and spectrogram settings
                 shifts, # the `Shift`s
                 bs:int=64, # clips per chunk
                ):
        cache = spec_cache(dls.valid)
        self.cfg, self.duration, self.shifts, self.bs = cache.cfg, float(cache.meta['duration']), shifts, bs
        self.files = [str(f) for f in dls.valid.items['path']]
        self.y = torch.stack([dls.valid.dataset.tls[1][i] for i in range(len(self.files))])
        self._specs = {}
    def _make(self, shift, wave_norm:bool)->torch.Tensor:
        "The spectrograms of the validation clips cropped as in training, shifted, then normalized if `wave_norm`"
        crop, tospec, norm, cfg = AudioCropPad(self.duration), MelSpec(cfg=self.cfg), AudioNormalize(), self.cfg
        noise = shift.noise_tfm() if shift.effect == 'noise' else None  # one seeded stream over the chunks, in order
        out = []
        for s in range(0, len(self.files), self.bs):
            x = torch.stack([crop(AudioTensor(load_audio(f, sr=cfg.sr)[0], sr=cfg.sr), split_idx=1)
                             for f in self.files[s:s+self.bs]])
            x = AudioTensor(shift(x, cfg.sr, noise=noise), sr=cfg.sr)
            if wave_norm:
                x = norm(x)
            out.append(tospec(x).as_subclass(torch.Tensor))
        return torch.cat(out)
    def specs(self, shift, wave_norm:bool)->torch.Tensor:
        "The validation spectrograms under `shift`, made on first use"
        key = (shift.name, wave_norm)
        if key not in self._specs:
            self._specs[key] = self._make(shift, wave_norm)
        return self._specs[key]
    def accuracy(self, model, dls, shift, wave_norm:bool)->float:
        "Accuracy of `model` on the shifted validation set, through the validation loader's own batch transforms"
        X, dev = self.specs(shift, wave_norm), dls.device or torch.device('cpu')
        model.eval()
        correct = 0
        with torch.no_grad():
            for s in range(0, len(X), self.bs):
                xb = TensorSpec(X[s:s+self.bs].to(dev), cfg=self.cfg)
                xb, yb = dls.valid.after_batch((xb, self.y[s:s+self.bs].to(dev)))
                correct += int((model(xb).argmax(-1) == yb).sum())
        return correct / len(X)
    def accuracies(self, model, dls, shifts, wave_norm:bool)->dict:
        "A results column per shift of `shifts`: the accuracy of `model` under it"
        return {sh.column: self.accuracy(model, dls, sh, wave_norm) for sh in shifts}
