"The main job: the ESC-50 normalization comparison (none / wave / global / channel / instance), several seeded runs each."
from __future__ import annotations
import json, time, warnings
from dataclasses import dataclass, asdict
from pathlib import Path
import numpy as np, pandas as pd
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches Learner.fit_one_cycle)
from fastprogress.fastprogress import progress_bar
from .data import read_esc50_csv, esc50_dls, esc50, fsdd_items, fsdd_dls, spec_config, check_batch_size, CrossValidationSplitter, FSDDSplitter
from .dlstats import compute_stats
from .norm import add_spec_norm
from .augment import SpecAugment, SPECAUGMENT_POLICIES
from .synth import synth_esc50
from .report import summarize, summary_markdown, plot_comparison, plot_curves, save_figure
from .utils import atomic_path
from . import __version__

__all__ = ['NORMS', 'PRESETS', 'ARCHS', 'CompareConfig', 'resolve_data', 'make_dls', 'make_learner', 'run_comparison']

NORMS = {  # name -> (waveform AudioNormalize?, spectrogram normalization kind or None)
    'none': (False, None), 'wave': (True, None), 'global': (True, 'global'), 'channel': (True, 'channel'), 'instance': (True, 'instance'),
    'imagenet': (False, 'imagenet')}  # the post's "pretrained with ImageNet statistics": spectrograms as [0,1] images

PRESETS = {
    # the CPU default: embedded dataset, small xresnet, minutes on 2 cores
    'quick': dict(data='synth', spec='quick', arch='xresnet18_tiny', epochs=8, runs=5, bs=32, lr=3e-3),
    # the published post: xresnet18 from scratch, 16 kHz, 201-bin dB spectrogram, 20 epochs, 5 runs (a GPU job)
    # (the draft's variant: --arch resnet18 --epochs 10 --spec esc50)
    'paper': dict(data='esc50', spec='paper', arch='xresnet18', epochs=20, runs=5, bs=64, lr=1e-3),
}

def _xresnet_tiny(n_in, n_out):
    from fastai.vision.models.xresnet import XResNet, ResBlock
    return XResNet(ResBlock, 1, [1,1,1,1], c_in=n_in, n_out=n_out, widen=.25, stem_szs=(16,16,64))

ARCHS = ('xresnet18_tiny', 'xresnet18', 'xresnet34', 'resnet18', 'resnet34')

@dataclass
class CompareConfig:
    "Everything that decides a comparison's numbers; saved as `config.json` so `--resume` only continues the same experiment"
    data:str = 'synth'; fold:int = 1; norms:tuple = ('none', 'global', 'channel'); runs:int = 3; epochs:int = 8
    arch:str = 'xresnet18_tiny'; bs:int = 32; lr:float = 3e-3; spec:str = 'quick'; specaugment:str|None = None
    frac:float = 1.0; seed:int = 0; pretrained:bool = False
    def check(self):
        "Errors that need no data: before anything is loaded or trained"
        bad = [n for n in self.norms if n not in NORMS]
        if bad or not self.norms: raise ValueError(f"Unknown normalization(s) {bad or '(none given)'} in --norms: choose from {','.join(NORMS)}")
        if len(set(self.norms)) != len(self.norms): raise ValueError(f"--norms lists a normalization twice: {','.join(self.norms)}")
        if self.arch not in ARCHS: raise ValueError(f"Unknown --arch {self.arch!r}: choose from {', '.join(ARCHS)}")
        if self.pretrained and not self.arch.startswith('resnet'): raise ValueError(f"--pretrained needs a torchvision resnet (--arch resnet18 or resnet34), not {self.arch}")
        if self.specaugment is not None and self.specaugment not in SPECAUGMENT_POLICIES:
            raise ValueError(f"Unknown --specaugment policy {self.specaugment!r}: choose from {', '.join(SPECAUGMENT_POLICIES)}")
        for k in ('runs', 'epochs', 'bs'):
            if getattr(self, k) < 1: raise ValueError(f"--{k} must be at least 1 ({getattr(self, k)} given)")
        if not 0 < self.frac <= 1: raise ValueError(f"--frac must be in (0, 1] ({self.frac} given)")
        if not self.lr > 0: raise ValueError(f"--lr must be positive ({self.lr} given)")
        spec_config(self.spec)
        return self
    def key(self): return {k: v for k, v in asdict(self).items() if k != 'runs'}  # more runs may be added on resume

def resolve_data(data:str, fold:int):
    "`data` ('synth', 'esc50' or a folder) to (kind, path, item DataFrame, training items); a bad folder or fold fails here, before training"
    if data == 'synth': path, kind = synth_esc50(), 'esc50'
    elif data == 'esc50': path, kind = esc50(), 'esc50'
    else:
        path = Path(data)
        if not path.is_dir(): raise FileNotFoundError(f"--data {data}: no such folder (use 'synth', 'esc50' or a dataset folder)")
        if (path/'meta'/'esc50.csv').is_file(): kind = 'esc50'
        elif any(path.glob('[0-9]_*_*.wav')): kind = 'fsdd'
        else: raise ValueError(f"--data {data} is not a known layout: expected ESC-50's (meta/esc50.csv and audio/*.wav) "
                               "or FSDD's ({digit}_{speaker}_{take}.wav files)")
    if kind == 'fsdd' and fold != 1:
        raise ValueError(f"--fold {fold}: {data} is in FSDD's layout, which has no folds: it is split by take (takes 0-4 validate)")
    df = read_esc50_csv(path) if kind == 'esc50' else fsdd_items(path)
    train, _ = (CrossValidationSplitter(fold) if kind == 'esc50' else FSDDSplitter('take'))(df)  # a missing fold is an error now
    return kind, path, df, len(train)

def make_dls(kind, path, cfg:CompareConfig, wave_norm:bool, progress:bool=True):
    "Cached, seeded DataLoaders for one run (spectrograms come from the feature cache, made once for all runs)"
    aug = [SpecAugment(policy=cfg.specaugment)] if cfg.specaugment else None
    if kind == 'esc50': return esc50_dls(path, fold=cfg.fold, bs=cfg.bs, spec=cfg.spec, wave_norm=wave_norm, batch_tfms=aug, cache=True, progress=progress)
    return fsdd_dls(path, bs=cfg.bs, spec=cfg.spec, sr=None, wave_norm=wave_norm, batch_tfms=aug, cache=True, progress=progress)

def make_learner(dls, arch:str, pretrained:bool=False)->Learner:
    "A one-input-channel classifier for spectrograms"
    if arch == 'xresnet18_tiny': return Learner(dls, _xresnet_tiny(1, dls.c), metrics=accuracy)
    if arch.startswith('xresnet'):
        from fastai.vision.models import xresnet
        return Learner(dls, getattr(xresnet, arch)(c_in=1, n_out=dls.c), metrics=accuracy)
    from fastai.vision.learner import vision_learner
    import torchvision.models as tvm
    try: return vision_learner(dls, getattr(tvm, arch), n_in=1, pretrained=pretrained, normalize=False, metrics=accuracy)
    except Exception as e:
        if not pretrained: raise
        raise RuntimeError(f"Could not get the ImageNet weights for {arch} ({type(e).__name__}: {e}). They are downloaded on first use: "
                           "run once with network access (torchvision caches them under ~/.cache/torch), or drop --pretrained.") from e

def _train_one(dls, cfg:CompareConfig, norm:str, run:int, seed:int, out:Path):
    "One seeded training run; returns its results row and its per-epoch curve"
    _, kind = NORMS[norm]
    if kind is not None:
        stats = None
        if kind in ('global', 'channel'):
            stats = compute_stats(dls.train, kind=kind, frac=cfg.frac, seed=seed, progress=False)
            if not (out/f'stats_{kind}.png').exists():  # statistics of the first run that used them
                save_figure(stats.plot(), out/f'stats_{kind}.png')
                stats.save(out/f'stats_{kind}.pt')
        add_spec_norm(dls, kind=kind, stats=stats)
    learn = make_learner(dls, cfg.arch, cfg.pretrained)
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(cfg.epochs, cfg.lr)
    secs = time.time() - t0
    vals = np.array([[float(v) for v in row] for row in learn.recorder.values])  # train_loss, valid_loss, accuracy per epoch
    row = dict(norm=norm, run=run, seed=seed, final_acc=vals[-1, 2], best_acc=vals[:, 2].max(), train_loss=vals[-1, 0],
               valid_loss=vals[-1, 1], seconds=round(secs, 2))
    curve = pd.DataFrame(dict(norm=norm, run=run, epoch=np.arange(1, len(vals) + 1), accuracy=vals[:, 2], valid_loss=vals[:, 1]))
    return row, curve

def _write_csv(df, path):
    with atomic_path(path) as tmp: df.to_csv(tmp, index=False)

def run_comparison(cfg:CompareConfig, out='runs/compare', resume:bool=False, progress:bool=True, log=print)->pd.DataFrame:
    "Train every (run, normalization) pair that `out/results.csv` lacks, saving after each; then write the summary and plots"
    cfg.check()
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    res_path, cur_path, cfg_path = out/'results.csv', out/'curves.csv', out/'config.json'
    if res_path.exists() and not resume:
        raise FileExistsError(f"{res_path} exists: pass --resume to complete that comparison, or choose another --out")
    if resume and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(cfg.key())).items() if old.get(k) != v}
        if diff: raise ValueError(f"--resume: {out} holds a comparison made with other settings {diff} (old, new): use another --out")
    kind, path, df, n_train = resolve_data(cfg.data, cfg.fold)
    check_batch_size(n_train, cfg.bs, f'the training set of --data {cfg.data}')
    with atomic_path(cfg_path) as tmp: tmp.write_text(json.dumps({**cfg.key(), 'fastnorm': __version__}, indent=1))
    results = pd.read_csv(res_path) if resume and res_path.exists() else pd.DataFrame()
    curves = pd.read_csv(cur_path) if resume and cur_path.exists() else pd.DataFrame()
    done = set(zip(results['norm'], results['run'])) if len(results) else set()
    if len(curves):  # a run counts once it is in results.csv: drop curves of a run interrupted between the two writes
        curves = curves[[k in done for k in zip(curves['norm'], curves['run'])]]
    jobs = [(r, n) for r in range(cfg.runs) for n in cfg.norms if (n, r) not in done]
    if done: log(f"resuming: {len(done)} run(s) already in {res_path}, {len(jobs)} to train")
    for r, n in (progress_bar(jobs) if progress and jobs else jobs):
        seed = cfg.seed + r
        set_seed(seed, reproducible=True)
        dls = make_dls(kind, path, cfg, NORMS[n][0], progress)
        row, curve = _train_one(dls, cfg, n, r, seed, out)
        results = pd.concat([results, pd.DataFrame([row])], ignore_index=True)
        curves = pd.concat([curves, curve], ignore_index=True)
        _write_csv(curves, cur_path); _write_csv(results, res_path)  # results last: a run counts once both are saved
        log(f"run {r} {n:>8}: accuracy {row['final_acc']:.4f} (best {row['best_acc']:.4f}) in {row['seconds']:.1f}s")
    results = results[results['norm'].isin(cfg.norms) & (results['run'] < cfg.runs)]
    summary = summarize(results, baseline='none' if 'none' in cfg.norms else cfg.norms[0], order=cfg.norms)
    md = summary_markdown(summary, cfg, n_classes=df['category' if kind == 'esc50' else 'label'].nunique())
    with atomic_path(out/'summary.md') as tmp: tmp.write_text(md)
    plot_comparison(results, summary, out/'comparison.png', order=cfg.norms)
    plot_curves(curves[curves['norm'].isin(cfg.norms) & (curves['run'] < cfg.runs)], out/'curves.png', order=cfg.norms)
    log('\n' + md)
    return results
