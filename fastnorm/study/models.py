"The comparison's classifiers: a one-input-channel network for spectrograms, with a recipe's stem as its first layer."
from __future__ import annotations
import torch
from torch import nn
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches Learner.fit_one_cycle)

__all__ = ['ARCHS', 'make_learner']

ARCHS = ('xresnet18_tiny', 'xresnet18', 'xresnet34', 'resnet18', 'resnet34')

def _xresnet(arch:str, n_out:int)->nn.Module:
    "fastai's xresnet `arch` for one input channel; 'xresnet18_tiny' is a quarter-width one-block-per-stage version"
    from fastai.vision.models import xresnet
    if arch != 'xresnet18_tiny':
        return getattr(xresnet, arch)(c_in=1, n_out=n_out)
    return xresnet.XResNet(xresnet.ResBlock, 1, [1,1,1,1], c_in=1, n_out=n_out, widen=.25, stem_szs=(16,16,64))

def _torchvision_learner(dls, arch:str, pretrained:bool)->Learner:
    "fastai's `vision_learner` over torchvision's `arch`, the statistics left to the recipes (`normalize=False`)"
    from fastai.vision.learner import vision_learner
    import torchvision.models as tvm
    try:
        return vision_learner(dls, getattr(tvm, arch), n_in=1, pretrained=pretrained, normalize=False,
                              metrics=accuracy)
    except Exception as e:
        if not pretrained:
            raise
        raise RuntimeError(f"Could not get the ImageNet weights for {arch} ({type(e).__name__}: {e}). "
                           "They are downloaded on first use: run once with network access "
                           "(torchvision caches them under ~/.cache/torch), or drop --pretrained.") from e

def _channels_last(learn:Learner)->Learner:
    """The model's conv weights in channels-last layout: oneDNN's channels-last convolutions and max pooling train
    faster on the CPU, and a one-channel input batch is already channels-last"""
    learn.model.to(memory_format=torch.channels_last)
    return learn

def make_learner(dls, # DataLoaders of one-channel spectrograms
                 arch:str, # one of `ARCHS`
                 pretrained:bool=False, # ImageNet weights (torchvision's resnets only)
                 stem:nn.Module|None=None, # a first layer, e.g. `FreqBatchNorm` or `PCEN`
                )->Learner:
    "A one-input-channel classifier for spectrograms, with `stem` as its first layer"
    if arch.startswith('xresnet'):
        body = _xresnet(arch, dls.c)
        return _channels_last(Learner(dls, body if stem is None else nn.Sequential(stem, body), metrics=accuracy))
    learn = _torchvision_learner(dls, arch, pretrained)
    if stem is not None:
        # inside the body, so the learner's splits still apply
        learn.model[0] = nn.Sequential(stem, *learn.model[0])
    return _channels_last(learn)
