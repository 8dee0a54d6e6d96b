"""Deploy a trained learner as one ONNX file: a waveform batch in, class probabilities out, with the whole inference
chain inside: crop/pad, waveform normalization, STFT, mel, dB or PCEN, the spectrogram normalization (its statistics
baked in as constants), the network and its activation. The serving side needs onnxruntime and numpy only
(`examples/serve_onnx.py`).

This module assembles the chain, checks it and writes it; it holds none of the math. Each transform that runs at
inference gives its module through one protocol, `to_module(cfg) -> nn.Module` (`fastnorm.steps.InferenceStep`): the
module computing it on plain tensors, constants as buffers, `cfg` the chain's `SpecConfig`. The transform's `encodes`
runs the same module, so training and the export share one implementation per step; a transform of your own becomes
exportable by implementing `to_module`, and one that runs at inference without it is refused, by name. Train-only
transforms (`split_idx == 0`, e.g. SpecAugment) are left out. The one export-only formulation is the STFT
(`fastnorm.onnxspec`: matrix products, fast in onnxruntime). Model stems (`PCEN`, `FreqBatchNorm`, `RelaxedFreqNorm`)
export as they are. `learn.deploy_meta`, a dict of strings, is added to the metadata."""
from __future__ import annotations
import copy, json, re, warnings
from pathlib import Path
import numpy as np, torch
from torch import nn
from fastai.data.transforms import ToTensor
import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
from .audio import AudioTensor, AudioNormalize, AudioCropPad, OpenAudio
from .spec import SpecConfig, MelSpec
from .cache import CachedSpec, dl_crop
from .onnxspec import PowerSTFT, Spectrogram
from .steps import InferenceStep
from .utils import atomic_path
from .checks import check_positive
from . import __version__

__all__ = ['DeployChain', 'deploy_chain', 'to_onnx', 'onnx_metadata', 'PowerSTFT']

class DeployChain(nn.Module):
    """A learner's inference as one module: waveforms `[B,N]` (mono, float32, at the training rate, any `N`) to class
    probabilities `[B,n_classes]`. `N` is made the training length `n` as `predict` does: a longer clip is
    centre-cropped, a shorter one zero-padded at the end (`CropPadWave`)"""
    def __init__(self, crop:nn.Module, wave:nn.Module|None, spec:nn.Module, steps:list, model:nn.Module, act,
                 meta:dict):
        super().__init__()
        self.crop, self.wave, self.spec, self.steps, self.model = crop, wave, spec, nn.Sequential(*steps), model
        self.act, self.meta = act, meta
    def forward(self, waveform):
        x = self.crop(waveform)[:, None]
        if self.wave is not None: x = self.wave(x)
        return self.act(self.model(self.steps(self.spec(x))))

def _loaded(learn):
    "A `Learner`, loaded (on the CPU) from `learn.export()`'s pickle when `learn` is a path"
    if not isinstance(learn, (str, Path)): return learn
    from fastai.learner import load_learner
    p = Path(learn)
    if not p.is_file(): raise FileNotFoundError(f"Learner file not found: {p} (save one with `learn.export()`)")
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return load_learner(p, cpu=True)

def _name(t)->str: return type(t).__name__

def _train_only(t)->bool: return getattr(t, 'split_idx', None) == 0  # RandTransforms that only run on the training set

def _reader(dl)->tuple:
    "(`OpenAudio` or None, `SpecCache` or None): how the learner's items become inputs; other type tfms are refused"
    fs = list(dl.dataset.tls[0].tfms.fs)
    k = next((i for i, f in enumerate(fs) if isinstance(f, (OpenAudio, CachedSpec))), None)
    if k is None:
        raise ValueError(f"to_onnx: the learner's inputs are made by {[_name(f) for f in fs]}, without OpenAudio "
                         "(AudioBlock) or a feature cache (SpecCacheBlock): it is not a fastnorm audio learner")
    after = [_name(f) for f in fs[k + 1:] if not _train_only(f)]
    if after: raise ValueError(f"to_onnx cannot export the input transform(s) {after} after {_name(fs[k])}")
    return (fs[k], None) if isinstance(fs[k], OpenAudio) else (None, fs[k].cache)

def _crop(dl, cache)->AudioCropPad:
    "The learner's crop/pad (the feature cache's: its duration, zeros at the end); other item transforms are refused"
    if cache is None:
        other = [_name(t) for t in dl.after_item.fs
                 if not isinstance(t, (AudioCropPad, ToTensor)) and not _train_only(t)]
        if other: raise ValueError(f"to_onnx cannot export the item transform(s) {other}")
    crop = dl_crop(dl)
    if crop is None:
        raise ValueError("to_onnx needs a fixed clip length: the learner has no AudioCropPad "
                         "(AudioBlock(duration=...))")
    return crop

def _step(t, cfg:SpecConfig)->nn.Module:
    "The module computing transform `t` at inference, by the `to_module` protocol; one without it is an error naming it"
    if not isinstance(t, InferenceStep):
        raise ValueError(f"to_onnx cannot export the batch transform {_name(t)} ({type(t).__module__}): it runs at "
                         "inference and has no `to_module(cfg)`: implement it, returning the nn.Module that computes "
                         "the transform on plain tensors (see fastnorm.steps.InferenceStep)")
    return copy.deepcopy(t.to_module(cfg)).cpu().float().eval()  # a copy: the transform's own module stays

def _batch_chain(dl, cache)->tuple:
    "(waveform transforms, SpecConfig, spectrogram transforms, train-only names) of the learner's batch transforms"
    wave, cfg, spec_tfms, skipped = [], None if cache is None else cache.cfg, [], []
    if cache is not None and cache.wave_norm: wave.append(AudioNormalize())
    for t in dl.after_batch.fs:
        if _train_only(t): skipped.append(_name(t))
        elif isinstance(t, MelSpec) and cfg is None: cfg = t.cfg
        else: (wave if cfg is None else spec_tfms).append(t)
    if cfg is None: raise ValueError("to_onnx: the learner makes no spectrogram (no MelSpec and no feature cache)")
    return wave, cfg, spec_tfms, skipped

def _freeze_model(model:nn.Module)->nn.Module:
    "A CPU, float32, eval-mode copy of `model` (fastnorm's stems take plain tensors and export as they are)"
    return copy.deepcopy(model).cpu().float().eval()

def _extra_meta(learn, meta:dict)->dict:
    "`learn.deploy_meta` (string keys and values, e.g. what adapting the learner recorded), refusing to replace a key"
    extra = getattr(learn, 'deploy_meta', None) or {}
    bad = {k: v for k, v in extra.items() if not (isinstance(k, str) and isinstance(v, str)) or k in meta}
    if bad: raise ValueError(f"to_onnx: `learn.deploy_meta` must map new string keys to strings, not {bad!r} "
                             f"(keys taken: {sorted(meta)})")
    return {**meta, **extra}

def deploy_chain(learn, # a `Learner`, or the path of its `learn.export()` pickle
                 act=None, # the activation turning outputs into probabilities; default: the loss function's
                )->DeployChain:
    """The learner's inference as one `DeployChain` (waveforms `[B,N]` to probabilities), each step the module its
    transform gives (`to_module`), constants taken from the learner: what `to_onnx` exports. A transform it cannot
    reproduce is an error naming it"""
    learn = _loaded(learn)
    dl = learn.dls.valid
    opener, cache = _reader(dl)
    if opener is not None and not opener.mono:
        raise ValueError("to_onnx exports mono learners (a waveform `[B,N]` in): this one reads its audio with "
                         "OpenAudio(mono=False)")
    crop_tfm = _crop(dl, cache)
    wave, cfg, spec_tfms, skipped = _batch_chain(dl, cache)
    crop = _step(crop_tfm, cfg)
    n, pad, duration = crop.n, crop.pad, crop_tfm.duration
    if act is None: act = getattr(learn.loss_func, 'activation', None)
    if act is None:
        raise ValueError(f"to_onnx: the loss function {_name(learn.loss_func)} has no `activation` to give "
                         "probabilities: pass `act` (e.g. `partial(torch.softmax, dim=-1)`)")
    meta = dict(vocab=json.dumps([str(v) for v in learn.dls.vocab]), spec_config=json.dumps(cfg.to_dict()),
                fastnorm_version=__version__, sample_rate=str(cfg.sr), duration=repr(float(duration)), n_samples=str(n),
                crop_pad=(f"a clip of N samples is made {n}: N > {n} keeps the centre, samples (N-{n})//2 .. "
                          f"(N-{n})//2+{n}-1; N < {n} gets {n}-N zeros " +
                          ('at the end' if pad == 'end' else 'split over both ends, the odd one at the end')),
                wave_norm=json.dumps(any(isinstance(t, AudioNormalize) for t in wave)),
                chain=json.dumps(['CropPadWave'] + [_name(t) for t in wave] + ['MelSpec'] +
                                 [_name(t) for t in spec_tfms] + [_name(learn.model), 'activation']),
                train_only_skipped=json.dumps(skipped),
                input='waveform: float32 [batch, samples], mono, at sample_rate',
                output='probabilities: float32 [batch, len(vocab)]')
    wave = nn.Sequential(*[_step(t, cfg) for t in wave]) if wave else None
    return DeployChain(crop, wave, Spectrogram(cfg, n), [_step(t, cfg) for t in spec_tfms],
                       _freeze_model(learn.model), act, _extra_meta(learn, meta)).eval()

def _check_clips(n:int, sr:int)->list:
    "Test clips for `to_onnx`'s check: a noisy tone shorter than, as long as and longer than the training length"
    rng = np.random.default_rng(0)
    out = []
    for k, m in enumerate((max(1, n // 2), n, n + n // 2 + 1)):
        t = np.arange(m) / sr
        out.append((0.3 * np.sin(2 * np.pi * (200 + 300 * k) * t) + 0.05 * rng.standard_normal(m)).astype(np.float32))
    return out

def _check(learn, proto_bytes:bytes, chain:DeployChain, atol:float):
    "onnxruntime's probabilities against `get_preds`' on the learner's own pipeline, before anything is written"
    import onnxruntime as ort
    sr, n = int(chain.meta['sample_rate']), int(chain.meta['n_samples'])
    sess = ort.InferenceSession(proto_bytes, providers=['CPUExecutionProvider'])
    clips = _check_clips(n, sr)
    got = np.concatenate([sess.run(None, {'waveform': c[None]})[0] for c in clips])
    items = [AudioTensor(torch.from_numpy(c)[None], sr=sr) for c in clips]
    with learn.no_bar(): want = learn.get_preds(dl=learn.dls.test_dl(items, bs=len(items)))[0].numpy()
    err = float(np.abs(got - want).max())
    if not err <= atol:
        raise RuntimeError(f"to_onnx: the exported model's probabilities differ from the learner's by {err:.2e} "
                           f"(more than atol={atol:g}) on test clips; nothing was written")

def _cause(e:Exception)->str:
    "The first line of what made the exporter fail (its own report puts it under 'Exception summary')"
    lines = [re.sub(r'\x1b\[[0-9;]*m', '', l).strip() for l in str(e).splitlines()]
    if 'Exception summary' in ' '.join(lines):
        k = next(i for i, l in enumerate(lines) if 'Exception summary' in l)
        return next((l for l in lines[k + 1:] if l), type(e).__name__)[:500]
    return f"{type(e).__name__}: {next((l for l in lines if l), '')}"[:500]

def _need_deploy_extra(check:bool):
    "Fail early, saying what to install, when the exporter's (or the check's) packages are missing"
    import importlib.util
    need = ('onnx', 'onnxscript') + (('onnxruntime',) if check else ())
    missing = [m for m in need if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"to_onnx needs {', '.join(missing)}: pip install 'fastnorm-audio[deploy]' "
                          "(onnx, onnxscript and onnxruntime)")

def to_onnx(learn, # a `Learner`, or the path of its `learn.export()` pickle
            path, # the `.onnx` file to write
            opset:int|None=None, # ONNX opset; default: the exporter's
            check:bool=True, # before writing: onnxruntime's probabilities must match `get_preds`' within `atol`
            atol:float=1e-4, # the check's tolerance (absolute, on probabilities)
            act=None, # the activation giving probabilities; default: the loss function's (softmax for cross-entropy)
           )->Path:
    """Export the learner's whole inference to one ONNX file: input `waveform`, float32 `[B,N]`, mono, at the training
    sample rate, any `B` and `N`; output `probabilities` `[B,n_classes]`. Each clip is made the training length `n` as
    `predict` does: longer (`N > n`) is centre-cropped to samples `(N-n)//2 .. (N-n)//2+n-1`, shorter is zero-padded at
    the end (both ends, the odd zero at the end, for `AudioCropPad(pad='both')`). The model's `metadata_props` hold
    `vocab` (JSON list, in output order), `spec_config` (JSON), `sample_rate`, `duration`, `n_samples`, `crop_pad`,
    `wave_norm`, `chain`, `fastnorm_version` and the entries of `learn.deploy_meta`. What cannot be exported is an
    error naming it, and nothing is written unless the export (and the check) succeeded"""
    _need_deploy_extra(check)
    check_positive('atol', atol)
    learn = _loaded(learn)
    path = Path(path)
    chain = deploy_chain(learn, act)
    n = int(chain.meta['n_samples'])
    example = torch.from_numpy(np.stack(_check_clips(n, chain.spec.cfg.sr)[2:] * 2))  # [2, N]: no 0/1 specialization
    dims = {'waveform': {0: torch.export.Dim('batch'), 1: torch.export.Dim('samples')}}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore')
            prog = torch.onnx.export(chain, (example,), dynamo=True, opset_version=opset, dynamic_shapes=dims,
                                     input_names=['waveform'], output_names=['probabilities'], verbose=False)
    except Exception as e:
        raise RuntimeError(f"to_onnx could not export {_name(learn.model)} with torch {torch.__version__}'s "
                           f"exporter: {_cause(e)}") from e
    proto = prog.model_proto
    for k, v in chain.meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    data = proto.SerializeToString()
    if check: _check(learn, data, chain, atol)
    with atomic_path(path) as tmp: tmp.write_bytes(data)
    return path

def onnx_metadata(path)->dict:
    "The `metadata_props` of an ONNX file as a dict, `vocab`, `spec_config` and the other JSON values decoded"
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    out = {p.key: p.value for p in m.metadata_props}
    for k in ('vocab', 'spec_config', 'wave_norm', 'chain', 'train_only_skipped'):
        if k in out: out[k] = json.loads(out[k])
    for k, f in (('sample_rate', int), ('n_samples', int), ('duration', float)):
        if k in out: out[k] = f(out[k])
    return out
