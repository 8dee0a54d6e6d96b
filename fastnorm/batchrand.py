"""The base of fastnorm's random batch transforms (SpecAugment and waveform augmentations): per-item randomness in one
call."""
from __future__ import annotations
import torch
from fastai.vision.augment import RandTransform
from .checks import check_frac

__all__ = ['BatchRandTransform']

class BatchRandTransform(RandTransform):
    """Base of fastnorm's batch augmentations: train-only (`split_idx=0`), per-item `p`, torch RNG (global, or
    `generator`/`seed`), `draw=` pins parameters"""
    split_idx = 0
    def __init__(self,
                 p:float=1., # probability of augmenting each item
                 generator:torch.Generator|None=None, # torch RNG to draw from (default: the global one)
                 seed:int|None=None, # or a seed for a generator of this transform's own
                 draw:dict|None=None, # pin parameters (`draw_keys`, broadcast per item), or a function of the batch
                ):
        "The shared `p`, `generator`, `seed`, `draw` of every subclass (which take them with `@delegates`)"
        super().__init__()
        self.p, self.generator, self.seed, self.draw, self._gens = check_frac('p', p), generator, seed, draw, {}
        if draw is not None and not (callable(draw) or isinstance(draw, dict)):
            raise ValueError("`draw` must be a dict of parameters or a function of the batch returning one "
                             f"({draw!r} given)")

    def before_call(self, b, split_idx): self.do = True  # `p` is drawn per item in `encodes`, not per batch
    def __getstate__(self): return {**self.__dict__, '_gens': {}}

    def _gen(self, device):
        if self.generator is not None: return self.generator
        if self.seed is None: return None
        if device not in self._gens: self._gens[device] = torch.Generator(device).manual_seed(self.seed)
        return self._gens[device]

    def _rand(self, x, *shape):
        "Uniform [0,1) of `shape` from this transform's RNG, on `x`'s device"
        g = self._gen(x.device)
        return torch.rand(shape, generator=g, device=g.device if g is not None else x.device).to(x.device)

    def _pinned(self, x, name, shape, dtype):
        d = self.draw(x) if callable(self.draw) else self.draw
        if not d or name not in d: return None
        return torch.as_tensor(d[name], device=x.device).to(dtype).expand(shape)

    def _apply(self, x):
        "`[B]` bool: which items are augmented (probability `p` each)"
        got = self._pinned(x, 'apply', (x.shape[0],), torch.bool)
        if got is not None: return got
        if self.p == 1.: return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return self._rand(x, x.shape[0]) < self.p
