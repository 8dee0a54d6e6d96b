"""The normalizations of today's strong audio models, for `TensorSpec` batches `[B,C,F,T]`:

- `FreqBatchNorm`: PANNs' `bn0`, a learnable BatchNorm over mel bins, as a model stem (`nn.Module`);
- `freq_instance_norm`, `RelaxedFreqNorm` (module), `FreqInstanceNorm` (batch transform): instance frequency-wise
  normalization (IFN) and its relaxed form RFN = λ LN + (1-λ) IFN (Kim et al., 2022);
- `ConstantSpecNorm` with `CONSTANT_NORM_RECIPES`: fixed dataset constants, e.g. AST/BEATs' `(x - μ) / (2σ)`;
- `FreqMixStyle`: mixes per-item frequency statistics between items (Schmid et al., DCASE 2022), train only."""
from __future__ import annotations
import torch
from torch import nn
from fastcore.meta import delegates
from fastai.data.transforms import DisplayedTransform
from fastai.torch_core import retain_type
from .spec import TensorSpec
from .norm import GlobalSpecNorm, freq_instance_norm, RelaxedFreqNorm
from .steps import plain
from .batchrand import BatchRandTransform
from .checks import check_frac, check_int, check_positive, check_choice, check_batch4d

__all__ = ['FreqBatchNorm', 'freq_instance_norm', 'RelaxedFreqNorm', 'FreqInstanceNorm', 'CONSTANT_NORM_RECIPES',
           'ConstantSpecNorm', 'FreqMixStyle']

class FreqBatchNorm(nn.Module):
    """PANNs' `bn0`: BatchNorm with one running mean/var and one learnable scale/shift per channel and mel bin,
    statistics over the batch and time. Prepend it to a network as its stem:
    `nn.Sequential(FreqBatchNorm(n_mels), body)`"""
    def __init__(self, n_bands:int, # mel bins F
                 n_channels:int=1, # input channels C
                 momentum:float=0.1, eps:float=1e-5, affine:bool=True, # as `nn.BatchNorm1d`
                ):
        super().__init__()
        self.n_bands, self.n_channels = check_int('n_bands', n_bands, lo=1), check_int('n_channels', n_channels, lo=1)
        self.bn = nn.BatchNorm1d(n_channels * n_bands, eps=eps, momentum=momentum, affine=affine)
    def extra_repr(self): return f"n_bands={self.n_bands}, n_channels={self.n_channels}"
    def forward(self, x):
        "`x`: `[B,C,F,T]`, any device; returns a plain tensor of the same shape"
        check_batch4d(x, 'FreqBatchNorm')
        B, C, F, T = x.shape
        if (C, F) != (self.n_channels, self.n_bands):
            raise ValueError(f"FreqBatchNorm was made for {self.n_channels} channel(s) x {self.n_bands} bands, "
                             f"not a batch of shape {list(x.shape)}")
        xt = plain(x)
        return self.bn(xt.reshape(B, C * F, T)).reshape(B, C, F, T)

class FreqInstanceNorm(DisplayedTransform):
    """IFN (`lam=0`, the same as `InstanceSpecNorm('freq')`) or RFN (`0 < lam < 1`) on the input spectrogram, as a
    batch transform on `TensorSpec` `[B,C,F,T]`"""
    order = 99  # where the other normalizations sit: after `MelSpec`, before SpecAugment
    def __init__(self, lam:float=0.5, # λ of RFN; 0 is IFN
                 eps:float=1e-5): # added to the variances, as in the paper
        super().__init__()
        self.lam, self.eps = check_frac('lam', lam), check_positive('eps', eps)
    @property
    def name(self): return f"FreqInstanceNorm -- lam {self.lam}\n"
    def to_module(self, cfg=None)->nn.Module: return RelaxedFreqNorm(self.lam, self.eps)
    def encodes(self, x:TensorSpec):
        "Each item normalized by its own statistics; keeps `cfg`"
        return TensorSpec(self.to_module()(x), cfg=getattr(x, 'cfg', None))

# recipe -> how the constants are used: `(x - mean) / (std_mult * std)`, one mean and std for the whole training set
CONSTANT_NORM_RECIPES = {
    'ast': dict(std_mult=2.),    # AST (Gong et al. 2021) and BEATs (Chen et al. 2022): (fbank - mean) / (2 * std)
    'standard': dict(std_mult=1.),  # plain z-score with fixed constants
}

class ConstantSpecNorm(GlobalSpecNorm):
    """`(x - mean) / (std_mult * std)` with one `mean` and `std` computed once on the training set and then fixed, as
    AST and BEATs ship theirs (AudioSet's -4.27/4.57 for AST's Kaldi fbanks: constants belong to their features, so
    compute your own)"""
    def __init__(self, mean=None, # a `StatsRecorder` (pooled to one value) or the mean
                 std=None, # the std (not with a `StatsRecorder`)
                 std_mult:float=1., # divide by this multiple of `std`: 2 in the AST/BEATs recipe
                 **kwargs, # `eps`, `cfg` as `SpecNormalize`
                ):
        std_mult = check_positive('std_mult', std_mult)
        super().__init__(mean, std, **kwargs)
        self.std_mult = float(std_mult)
        self.std = self.std * self.std_mult
    @classmethod
    def from_recipe(cls, recipe:str, # a key of `CONSTANT_NORM_RECIPES`: 'ast' or 'standard'
                    mean=None, std=None, **kwargs):
        "The normalization of a named recipe with your dataset's constants"
        recipe = check_choice('recipe', recipe, tuple(CONSTANT_NORM_RECIPES))
        return cls(mean, std, **{**CONSTANT_NORM_RECIPES[recipe], **kwargs})
    @property
    def name(self):
        std = float(self.std) / self.std_mult
        return f"ConstantSpecNorm -- mean {float(self.mean):.4g}, {self.std_mult:g} x std {std:.4g}\n"

class FreqMixStyle(BatchRandTransform):
    """Freq-MixStyle (Schmid et al., DCASE 2022): each chosen item's per-frequency mean and std (over channels and
    time) are replaced by a mix with another item's, `lam ~ Beta(alpha, alpha)`; train only, `[B,C,F,T]`, any device"""
    order = 100  # after the normalization (99), with SpecAugment
    draw_keys = ('lam', 'perm', 'apply')  # `[B]` each; `perm` is the partner of each item
    @delegates(BatchRandTransform.__init__)
    def __init__(self, p:float=0.4, # probability of mixing each item (CP-JKU's recipe: a whole batch with p 0.4)
                 alpha:float=0.3, # Beta(alpha, alpha) of the mixing weight
                 eps:float=1e-6, # added to the variances
                 **kwargs):
        super().__init__(p=p, **kwargs)
        self.alpha, self.eps = check_positive('alpha', alpha), check_positive('eps', eps)
    def _beta(self, x, B):
        "`[B]` draws of Beta(alpha, alpha) from the transform's RNG: G1 / (G1 + G2) with gamma draws"
        g = self._gen(x.device)
        conc = torch.full((2, B), self.alpha, device=g.device if g is not None else x.device)
        gam = torch._standard_gamma(conc, generator=g).to(x.device)
        return gam[0] / (gam[0] + gam[1]).clamp_min(1e-30)
    def encodes(self, x:TensorSpec):
        check_batch4d(x, 'FreqMixStyle')
        B = x.shape[0]
        xt = x.as_subclass(torch.Tensor)
        if not xt.is_floating_point(): xt = xt.float()
        on = self._apply(xt)
        lam = self._pinned(xt, 'lam', (B,), xt.dtype)
        if lam is None: lam = self._beta(xt, B).to(xt.dtype)
        perm = self._pinned(xt, 'perm', (B,), torch.long)
        if perm is None: perm = torch.argsort(self._rand(xt, B))
        lam = torch.where(on, lam, torch.ones_like(lam))[:, None, None, None]
        # population var (the recipe's is unbiased: x T/(T-1))
        var, mu = torch.var_mean(xt, (1, 3), keepdim=True, correction=0)
        sig = (var + self.eps).sqrt()
        mu_mix, sig_mix = torch.lerp(mu[perm], mu, lam), torch.lerp(sig[perm], sig, lam)
        out = (xt - mu) / sig * sig_mix + mu_mix
        return retain_type(torch.where(on[:, None, None, None], out, xt), old=x)
