"""The inference-step protocol. A transform that runs at inference (crop/pad, `AudioNormalize`, each spectrogram
normalization, PCEN, or a transform of your own) has one method, `to_module(cfg) -> nn.Module`: the module computing
it on plain tensors, its constants held as buffers. The transform's `encodes` runs that same module (or the pure
function it calls), and `fastnorm.deploy.to_onnx` puts it into the exported chain: one implementation per step. A user's
transform implements it to become exportable, without importing `fastnorm.deploy`."""
from __future__ import annotations
from typing import Protocol, runtime_checkable
import torch
from torch import nn
from fastai.torch_core import TensorBase

__all__ = ['InferenceStep', 'plain', 'exporting', 'const']

@runtime_checkable
class InferenceStep(Protocol):
    """What `to_onnx` asks of a transform that runs at inference: `to_module(cfg)` gives an `nn.Module` computing it on
    plain float32 tensors (`[B,C,N]` waveforms before the spectrogram, `[B,C,F,T]` spectrograms after it),
    shape-agnostic where it can be, its constants registered as buffers (see `const`); `cfg` is the chain's
    `SpecConfig` (its `sr` is the waveform's rate). Train-only transforms (`split_idx == 0`) need none: they are left
    out"""
    def to_module(self, cfg=None)->nn.Module: ...

def plain(x:torch.Tensor)->torch.Tensor:
    "`x` as a plain `torch.Tensor` (a fastai `TensorBase` such as `TensorSpec` unwrapped; any other tensor as it is)"
    return x.as_subclass(torch.Tensor) if isinstance(x, TensorBase) else x

def exporting()->bool:
    "Whether `torch.export` (and so `to_onnx`) is tracing: checks that read the data are skipped then"
    return torch.compiler.is_exporting()

def const(v)->torch.Tensor:
    "A constant for a module's buffer: a detached float32 CPU copy of `v`"
    return plain(torch.as_tensor(v)).detach().float().cpu().clone()
