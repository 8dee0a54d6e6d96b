"""The main job: the ESC-50 normalization comparison (none / wave / global / channel / instance), several seeded runs
each."""
from __future__ import annotations
import json, os, time, warnings
from contextlib import contextmanager
from dataclasses import dataclass, asdict
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple
import numpy as np, pandas as pd, torch
from torch import nn
from fastcore.foundation import L
from fastai.learner import Learner
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from fastai.callback.schedule import fit_one_cycle  # noqa: F401 (patches Learner.fit_one_cycle)
from fastprogress.fastprogress import progress_bar
from ..spec import spec_config
from ..data import (read_esc50_csv, esc50_dls, esc50, fsdd_items, fsdd_dls, check_batch_size,
                   CrossValidationSplitter, FSDDSplitter)
from ..dlstats import compute_stats
from ..norm import add_spec_norm
from ..audio import load_audio, AudioTensor, AudioNormalize, AudioCropPad
from ..spec import MelSpec, TensorSpec
from ..cache import CachedSpec
from ..pcen import PCEN, PCENTransform
from ..freqnorm import FreqBatchNorm, FreqInstanceNorm, ConstantSpecNorm, FreqMixStyle
from .shift import parse_shifts
from ..augment import SpecAugment, SPECAUGMENT_POLICIES
from ..synth import synth_esc50
from .report import (summarize, summary_markdown, summarize_shifts, shift_markdown, plot_comparison, plot_curves,
                     save_figure)
from ..utils import atomic_path
from .. import __version__

__all__ = ['Norm', 'NORMS', 'PCEN_SCALE', 'PRESETS', 'ARCHS', 'CompareConfig', 'resolve_data', 'make_dls',
           'make_learner', 'dist_info', 'run_comparison']

class Norm(NamedTuple):
    """How `fastnorm compare` builds one normalization: waveform `AudioNormalize`?, a batch transform, a model stem, an
    augmentation"""
    wave:bool
    kind:str|None = None  # batch transform on the spectrogram: global, channel, instance, imagenet, ast, pcen, ifn, rfn
    stem:str|None = None  # model stem prepended to the network: 'fbn' (PANNs bn0), 'pcen' (trainable PCEN)
    aug:str|None = None   # train-only augmentation: 'mixstyle'
    doc:str = ''

NORMS = {
    'none': Norm(False, doc='raw log-mel'),
    'wave': Norm(True, doc='per-clip waveform AudioNormalize only'),
    'global': Norm(True, 'global', doc='AudioNormalize, then one mean/std of the training set'),
    'channel': Norm(True, 'channel', doc='AudioNormalize, then one mean/std per mel bin of the training set'),
    'instance': Norm(True, 'instance', doc="AudioNormalize, then each spectrogram by its own mean and std"),
    'imagenet': Norm(False, 'imagenet',
                     doc="each spectrogram min-max scaled to [0,1] like an image, then ImageNet's mean and std"),
    'ast': Norm(False, 'ast', doc='AST/BEATs: (x - mean) / (2 std), constants of the training set computed once'),
    'pcen': Norm(False, 'pcen',
                 doc="PCEN with librosa's defaults in place of the log "
                     "(power x 2**31, as librosa's docs scale float audio)"),
    'pcen_learn': Norm(False, stem='pcen',
                       doc='PCEN as a trainable model stem, one gain/bias/power/smoothing per mel bin'),
    'fbn': Norm(False, stem='fbn', doc="PANNs' bn0: a learnable BatchNorm over mel bins as the model's stem"),
    'ifn': Norm(False, 'ifn', doc='instance frequency-wise normalization: each item and mel bin over time'),
    'rfn': Norm(False, 'rfn', doc='relaxed IFN, 0.5 LN + 0.5 IFN (Kim et al. 2022)'),
    'mixstyle': Norm(False, 'ast', aug='mixstyle',
                     doc='the AST constants plus Freq-MixStyle (p 0.4, alpha 0.3) on the training batches'),
}
PCEN_SCALE = 2.**31  # librosa's docs: PCEN of float audio's spectrogram scaled as 32-bit integer audio

PRESETS = {
    # the CPU default: embedded dataset, small xresnet, minutes on 2 cores
    'quick': dict(data='synth', spec='quick', arch='xresnet18_tiny', epochs=8, runs=5, bs=32, lr=3e-3,
                  norms=('none', 'global', 'channel', 'pcen'),
                  shifts=('gain:-20', 'tilt:-3', 'noise:10', 'resample:8000')),
    # the published post: xresnet18 from scratch, 16 kHz, 201-bin dB spectrogram, 20 epochs, 5 runs (a GPU job)
    # (the draft's variant: --arch resnet18 --epochs 10 --spec esc50)
    'paper': dict(data='esc50', spec='paper', arch='xresnet18', epochs=20, runs=5, bs=64, lr=1e-3,
                  norms=('none', 'global', 'channel'), shifts=()),
}

def _xresnet_tiny(n_in, n_out):
    from fastai.vision.models.xresnet import XResNet, ResBlock
    return XResNet(ResBlock, 1, [1,1,1,1], c_in=n_in, n_out=n_out, widen=.25, stem_szs=(16,16,64))

ARCHS = ('xresnet18_tiny', 'xresnet18', 'xresnet34', 'resnet18', 'resnet34')

@dataclass
class CompareConfig:
    """Everything that decides a comparison's numbers; saved as `config.json`, so `--resume` only continues the same
    experiment"""
    data:str = 'synth'
    fold:int = 1
    norms:tuple = ('none', 'global', 'channel')
    runs:int = 3
    epochs:int = 8
    arch:str = 'xresnet18_tiny'
    bs:int = 32
    lr:float = 3e-3
    spec:str = 'quick'
    specaugment:str|None = None
    frac:float = 1.0
    seed:int = 0
    pretrained:bool = False
    speaker:str|None = None  # FSDD: validate on this speaker, train on the others (default: split by take)
    # waveform shifts the validation set is also evaluated under (not part of `key`: more may be added on resume)
    shifts:tuple = ()
    def check(self):
        "Errors that need no data: before anything is loaded or trained"
        bad = [n for n in self.norms if n not in NORMS]
        if bad or not self.norms:
            raise ValueError(f"Unknown normalization(s) {bad or '(none given)'} in --norms: "
                             f"choose from {','.join(NORMS)}")
        if len(set(self.norms)) != len(self.norms):
            raise ValueError(f"--norms lists a normalization twice: {','.join(self.norms)}")
        if self.arch not in ARCHS: raise ValueError(f"Unknown --arch {self.arch!r}: choose from {', '.join(ARCHS)}")
        if self.pretrained and not self.arch.startswith('resnet'):
            raise ValueError(f"--pretrained needs a torchvision resnet (--arch resnet18 or resnet34), not {self.arch}")
        if self.specaugment is not None and self.specaugment not in SPECAUGMENT_POLICIES:
            raise ValueError(f"Unknown --specaugment policy {self.specaugment!r}: "
                             f"choose from {', '.join(SPECAUGMENT_POLICIES)}")
        for k in ('runs', 'epochs', 'bs'):
            if getattr(self, k) < 1: raise ValueError(f"--{k} must be at least 1 ({getattr(self, k)} given)")
        if not 0 < self.frac <= 1: raise ValueError(f"--frac must be in (0, 1] ({self.frac} given)")
        if not self.lr > 0: raise ValueError(f"--lr must be positive ({self.lr} given)")
        spec_config(self.spec)
        parse_shifts(self.shifts)
        return self
    def key(self):
        "What must match on resume: all but `runs` and `shifts` (more may be added); `speaker` only where it is set"
        return {k: v for k, v in asdict(self).items()
                if k not in ('runs', 'shifts') and not (k == 'speaker' and v is None)}

def resolve_data(data:str, fold:int, speaker:str|None=None):
    """`data` ('synth', 'esc50' or a folder) to (kind, path, item DataFrame, training items); a bad folder or fold fails
    here, before training"""
    if data == 'synth': path, kind = synth_esc50(), 'esc50'
    elif data == 'esc50': path, kind = esc50(), 'esc50'
    else:
        path = Path(data)
        if not path.is_dir():
            raise FileNotFoundError(f"--data {data}: no such folder (use 'synth', 'esc50' or a dataset folder)")
        if (path/'meta'/'esc50.csv').is_file(): kind = 'esc50'
        elif any(path.glob('[0-9]_*_*.wav')): kind = 'fsdd'
        else:
            raise ValueError(f"--data {data} is not a known layout: expected ESC-50's (meta/esc50.csv and audio/*.wav) "
                             "or FSDD's ({digit}_{speaker}_{take}.wav files)")
    if kind == 'fsdd' and fold != 1:
        raise ValueError(f"--fold {fold}: {data} is in FSDD's layout, which has no folds: "
                         "it is split by take (takes 0-4 validate)")
    if kind == 'esc50' and speaker is not None:
        raise ValueError(f"--speaker {speaker}: only a dataset in FSDD's layout has speakers")
    df = read_esc50_csv(path) if kind == 'esc50' else fsdd_items(path)
    if kind == 'esc50': split = CrossValidationSplitter(fold)
    else: split = FSDDSplitter('take' if speaker is None else 'speaker', test_speaker=speaker)
    train, _ = split(df)  # a missing fold or speaker is an error now
    return kind, path, df, len(train)

def make_dls(kind, path, cfg:CompareConfig, wave_norm:bool, progress:bool=True):
    "Cached, seeded DataLoaders for one run (spectrograms come from the feature cache, made once for all runs)"
    aug = [SpecAugment(policy=cfg.specaugment)] if cfg.specaugment else None
    if kind == 'esc50':
        return esc50_dls(path, fold=cfg.fold, bs=cfg.bs, spec=cfg.spec, wave_norm=wave_norm, batch_tfms=aug, cache=True,
                         progress=progress)
    by = 'take' if cfg.speaker is None else 'speaker'
    return fsdd_dls(path, bs=cfg.bs, by=by, test_speaker=cfg.speaker, spec=cfg.spec, sr=None, wave_norm=wave_norm,
                    batch_tfms=aug, cache=True, progress=progress)

def make_learner(dls, arch:str, pretrained:bool=False, stem:nn.Module|None=None)->Learner:
    "A one-input-channel classifier for spectrograms, with `stem` (e.g. `FreqBatchNorm`, `PCEN`) as its first layer"
    if arch == 'xresnet18_tiny' or arch.startswith('xresnet'):
        from fastai.vision.models import xresnet
        body = _xresnet_tiny(1, dls.c) if arch == 'xresnet18_tiny' else getattr(xresnet, arch)(c_in=1, n_out=dls.c)
        return _channels_last(Learner(dls, body if stem is None else nn.Sequential(stem, body), metrics=accuracy))
    from fastai.vision.learner import vision_learner
    import torchvision.models as tvm
    try: learn = vision_learner(dls, getattr(tvm, arch), n_in=1, pretrained=pretrained, normalize=False,
                                metrics=accuracy)
    except Exception as e:
        if not pretrained: raise
        raise RuntimeError(f"Could not get the ImageNet weights for {arch} ({type(e).__name__}: {e}). "
                           "They are downloaded on first use: run once with network access "
                           "(torchvision caches them under ~/.cache/torch), or drop --pretrained.") from e
    # the stem goes inside the body, so the learner's splits still apply
    if stem is not None: learn.model[0] = nn.Sequential(stem, *learn.model[0])
    return _channels_last(learn)

def _channels_last(learn:Learner)->Learner:
    """The model's conv weights in channels-last layout: training on the CPU runs about 1.5x faster (oneDNN's
    channels-last convolutions and max pooling); a one-channel input batch is already channels-last"""
    learn.model.to(memory_format=torch.channels_last)
    return learn

def _spec_cache(dl):
    "The `SpecCache` a cached DataLoader reads"
    return next(f.cache for f in dl.dataset.tls[0].tfms.fs if isinstance(f, CachedSpec))

def _insert(dls, *tfms):
    "Add batch transforms to every loader's `after_batch`, in order"
    for dl in dls.loaders:
        p = dl.after_batch  # a new list per loader (loaders made with `new` share the old one)
        p.fs = L(list(p.fs) + list(tfms)).sorted(key='order')

def _prepare(dls, cfg:CompareConfig, norm:str, run:int, seed:int, out:Path):
    "Insert normalization `norm`'s transforms into `dls`; returns its model stem (or None)"
    spec = NORMS[norm]
    kind, c = spec.kind, _spec_cache(dls.train).cfg
    if kind in ('global', 'channel', 'ast'):
        stats = compute_stats(dls.train, kind='global' if kind == 'ast' else kind, frac=cfg.frac, seed=seed,
                              progress=False)
        if run == 0 and not (out/f'stats_{kind}.pt').exists():  # the statistics of run 0
            save_figure(stats.plot(), out/f'stats_{kind}.png')
            stats.save(out/f'stats_{kind}.pt')
        if kind == 'ast': _insert(dls, ConstantSpecNorm.from_recipe('ast', stats).to(dls.device or 'cpu'))
        else: add_spec_norm(dls, kind=kind, stats=stats)
    elif kind in ('instance', 'imagenet'): add_spec_norm(dls, kind=kind)
    elif kind == 'pcen': _insert(dls, PCENTransform(scale=PCEN_SCALE))
    elif kind in ('ifn', 'rfn'): _insert(dls, FreqInstanceNorm(0. if kind == 'ifn' else .5))
    if spec.aug == 'mixstyle': _insert(dls, FreqMixStyle(p=.4, alpha=.3))
    if spec.stem == 'fbn': return FreqBatchNorm(c.n_freq)
    if spec.stem == 'pcen': return PCEN(c.n_freq, sr=c.sr, hop_length=c.hop_length, from_db=c.db, scale=PCEN_SCALE)
    return None

class ShiftedValid:
    """The validation set's spectrograms under each shift (made once per shift and waveform normalization, shared by all
    models)"""
    def __init__(self, dls, shifts, bs:int=64):
        cache = _spec_cache(dls.valid)
        self.cfg, self.duration, self.shifts, self.bs = cache.cfg, float(cache.meta['duration']), shifts, bs
        self.files = [str(f) for f in dls.valid.items['path']]
        self.y = torch.stack([dls.valid.dataset.tls[1][i] for i in range(len(self.files))])
        self._specs = {}
    def specs(self, shift, wave_norm:bool)->torch.Tensor:
        key = (shift.name, wave_norm)
        if key not in self._specs:
            crop, tospec, norm, cfg = AudioCropPad(self.duration), MelSpec(cfg=self.cfg), AudioNormalize(), self.cfg
            noise = shift.noise_tfm() if shift.effect == 'noise' else None  # one seeded stream over the chunks, in order
            out = []
            for s in range(0, len(self.files), self.bs):
                x = torch.stack([crop(AudioTensor(load_audio(f, sr=cfg.sr)[0], sr=cfg.sr), split_idx=1)
                                 for f in self.files[s:s+self.bs]])
                x = AudioTensor(shift(x, cfg.sr, noise=noise), sr=cfg.sr)
                if wave_norm: x = norm(x)
                out.append(tospec(x).as_subclass(torch.Tensor))
            self._specs[key] = torch.cat(out)
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

def _shift_cols(shifts): return [f'acc@{s.name}' for s in shifts]

def _model_path(out:Path, norm:str, run:int)->Path: return out/'models'/f'{norm}-run{run}.pt'

def _train_one(dls, cfg:CompareConfig, norm:str, run:int, seed:int, out:Path, shifted:ShiftedValid|None=None):
    """One seeded training run; returns its results row (with an accuracy per shift) and its per-epoch curve; keeps the
    weights"""
    stem = _prepare(dls, cfg, norm, run, seed, out)
    learn = make_learner(dls, cfg.arch, cfg.pretrained, stem)
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(cfg.epochs, cfg.lr)
    secs = time.time() - t0
    # train_loss, valid_loss, accuracy per epoch
    vals = np.array([[float(v) for v in row] for row in learn.recorder.values])
    row = dict(norm=norm, run=run, seed=seed, final_acc=vals[-1, 2], best_acc=vals[:, 2].max(), train_loss=vals[-1, 0],
               valid_loss=vals[-1, 1], seconds=round(secs, 2))
    # the weights, to evaluate new shifts on resume
    with atomic_path(_model_path(out, norm, run)) as tmp: torch.save(learn.model.state_dict(), tmp)
    if shifted is not None:
        for sh in shifted.shifts: row[f'acc@{sh.name}'] = shifted.accuracy(learn.model, dls, sh, NORMS[norm].wave)
    curve = pd.DataFrame(dict(norm=norm, run=run, epoch=np.arange(1, len(vals) + 1), accuracy=vals[:, 2],
                              valid_loss=vals[:, 1]))
    return row, curve

def _evaluate_kept(dls, cfg:CompareConfig, norm:str, run:int, seed:int, out:Path, shifted:ShiftedValid, shifts)->dict:
    "Accuracy under `shifts` of a model trained earlier, from its kept weights (nothing is trained)"
    stem = _prepare(dls, cfg, norm, run, seed, out)
    learn = make_learner(dls, cfg.arch, cfg.pretrained, stem)
    learn.model.load_state_dict(torch.load(_model_path(out, norm, run), map_location='cpu'))
    learn.model.to(dls.device or 'cpu')
    return {f'acc@{sh.name}': shifted.accuracy(learn.model, dls, sh, NORMS[norm].wave) for sh in shifts}

def _write_csv(df, path):
    with atomic_path(path) as tmp: df.to_csv(tmp, index=False)

def dist_info()->tuple:
    "(rank, world size) from torch.distributed's environment (`torchrun`, `accelerate launch`); joins the process group"
    world, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda: torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
            # a rank with one job fewer waits at the final barrier for a whole run: the default 30 min is too short
            dist.init_process_group('nccl' if cuda else 'gloo', timeout=timedelta(hours=48))
    return rank, world

@contextmanager
def _one_process():
    """Each job is a single-process training: hide the process group from fastai, whose metrics and losses would
    otherwise all-gather across ranks (`maybe_gather` reads WORLD_SIZE) while each rank trains another model"""
    old = {k: os.environ.get(k) for k in ('WORLD_SIZE', 'RANK')}
    os.environ.update(WORLD_SIZE='1', RANK='0')
    try: yield
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v

def _barrier(world):
    if world > 1:
        import torch.distributed as dist
        dist.barrier()

def _canonical(df, norms):
    "Rows by run, then in the order of `--norms` (the same order whatever process trained them)"
    if not len(df): return df
    pos = {n: i for i, n in enumerate(norms)}
    key = df['run'].astype(int) * (len(pos) + 1) + df['norm'].map(lambda n: pos.get(n, len(pos)))
    return df.iloc[np.argsort(key.to_numpy(), kind='stable')].reset_index(drop=True)

def _read_all(out:Path, name:str, resume:bool):
    "`out/name.csv` with the rows the ranks of an earlier distributed run left in `name.rank*.csv`"
    if not resume: return pd.DataFrame()
    parts = [out/f'{name}.csv'] + sorted(out.glob(f'{name}.rank*.csv'))
    dfs = [pd.read_csv(p) for p in parts if p.exists() and p.stat().st_size > 0]
    dfs = [d for d in dfs if len(d)]
    if not dfs: return pd.DataFrame()
    df = pd.concat(dfs, ignore_index=True)
    keys = ['norm', 'run'] + (['epoch'] if 'epoch' in df else [])
    return df.drop_duplicates(keys, keep='first').reset_index(drop=True)

def run_comparison(cfg:CompareConfig, # what to compare
                   out='runs/compare', # the folder for results, curves, statistics, weights and the report
                   resume:bool=False, # complete the comparison in `out` (made with the same settings)
                   progress:bool=True, # progress bars
                   log=print, # where the per-run lines go
                  )->pd.DataFrame:
    """Train every (run, normalization) pair that `out/results.csv` lacks, saving after each, and evaluate each model
    under `cfg.shifts`; then write the summary and plots. Under `torchrun` the jobs are shared among the ranks by rank
    and world size"""
    cfg.check()
    shifts = parse_shifts(cfg.shifts, seed=cfg.seed)
    out = Path(out)
    res_path, cur_path, cfg_path = out/'results.csv', out/'curves.csv', out/'config.json'
    if (res_path.exists() or any(out.glob('results.rank*.csv'))) and not resume:
        raise FileExistsError(f"{res_path} exists: pass --resume to complete that comparison, or choose another --out")
    if resume and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(cfg.key())).items() if old.get(k) != v}
        if diff:
            raise ValueError(f"--resume: {out} holds a comparison made with other settings {diff} (old, new): "
                             "use another --out")
    rank, world = dist_info()
    if world > 1: log = (lambda f: lambda *a: f(f'[rank {rank}/{world}]', *a))(log)
    # rank 0 first: it may make the data
    if rank == 0: kind, path, df, n_train = resolve_data(cfg.data, cfg.fold, cfg.speaker)
    _barrier(world)
    if rank != 0: kind, path, df, n_train = resolve_data(cfg.data, cfg.fold, cfg.speaker)
    check_batch_size(n_train, cfg.bs, f'the training set of --data {cfg.data}')
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        with atomic_path(cfg_path) as tmp: tmp.write_text(json.dumps({**cfg.key(), 'fastnorm': __version__}, indent=1))
    results, curves = _read_all(out, 'results', resume), _read_all(out, 'curves', resume)
    _barrier(world)  # every rank has read what is there before anyone writes its own part
    done = set(zip(results['norm'], results['run'])) if len(results) else set()
    if len(curves):  # a run counts once it is in results.csv: drop curves of a run interrupted between the two writes
        curves = curves[[k in done for k in zip(curves['norm'], curves['run'])]]
    cols = _shift_cols(shifts)
    for c in cols:
        if len(results) and c not in results: results[c] = np.nan
    jobs = [(r, n) for r in range(cfg.runs) for n in cfg.norms if (n, r) not in done]
    evals = [(r, n) for r in range(cfg.runs) for n in cfg.norms if (n, r) in done and cols
             and results.loc[(results['norm'] == n) & (results['run'] == r), cols].isna().any(axis=None)]
    mine_j, mine_e = jobs[rank::world], evals[rank::world]
    if done and rank == 0:
        log(f"resuming: {len(done)} run(s) already in {res_path}, {len(jobs)} to train, "
            f"{len(evals)} to evaluate under new shifts")
    if rank == 0:  # the feature caches, before other ranks look for them
        with _one_process():
            for w in sorted({NORMS[n].wave for n in cfg.norms}): make_dls(kind, path, cfg, w, progress)
    _barrier(world)
    mine = results.iloc[0:0].copy()  # rows this rank trains or updates
    part = (lambda name: out/f'{name}.rank{rank}.csv') if world > 1 else (lambda name: out/f'{name}.csv')
    shifted = []  # one `ShiftedValid` (the validation files are the same for every normalization)
    def _shifted(dls):
        if not shifted: shifted.append(ShiftedValid(dls, shifts))
        return shifted[0]
    def _save():
        if world > 1:
            _write_csv(curves_mine, part('curves'))
            _write_csv(mine, part('results'))
        else:
            _write_csv(curves, cur_path)
            _write_csv(_canonical(results, cfg.norms), res_path)  # results last: a run counts once both are saved
    curves_mine = curves.iloc[0:0].copy()
    for r, n in (progress_bar(mine_e) if progress and mine_e and rank == 0 else mine_e):
        at = (results['norm'] == n) & (results['run'] == r)
        need = [sh for sh, c in zip(shifts, cols) if pd.isna(results.loc[at, c]).any()]
        if not _model_path(out, n, r).exists():
            log(f"run {r} {n}: its weights are not in {out/'models'}, "
                f"so it cannot be evaluated under {', '.join(s.name for s in need)}")
            continue
        set_seed(cfg.seed + r, reproducible=True)
        with _one_process():
            dls = make_dls(kind, path, cfg, NORMS[n].wave, False)
            got = _evaluate_kept(dls, cfg, n, r, cfg.seed + r, out, _shifted(dls), need)
        for c, v in got.items(): results.loc[at, c] = v
        if len(mine):
            mine = pd.concat([mine[~((mine['norm'] == n) & (mine['run'] == r))], results[at]], ignore_index=True)
        else: mine = results[at].copy()
        _save()
        log(f"run {r} {n:>8}: evaluated under {', '.join(s.name for s in need)}")
    for r, n in (progress_bar(mine_j) if progress and mine_j and rank == 0 else mine_j):
        seed = cfg.seed + r
        set_seed(seed, reproducible=True)
        with _one_process():
            dls = make_dls(kind, path, cfg, NORMS[n].wave, progress and rank == 0)
            row, curve = _train_one(dls, cfg, n, r, seed, out, _shifted(dls) if shifts else None)
        results = pd.concat([results, pd.DataFrame([row])], ignore_index=True)
        mine = pd.concat([mine, pd.DataFrame([row])], ignore_index=True)
        curves = pd.concat([curves, curve], ignore_index=True)
        curves_mine = pd.concat([curves_mine, curve], ignore_index=True)
        _save()
        log(f"run {r} {n:>8}: accuracy {row['final_acc']:.4f} (best {row['best_acc']:.4f}) in {row['seconds']:.1f}s"
            + ''.join(f", {c[4:]} {row[c]:.4f}" for c in cols))
    _barrier(world)
    if rank != 0:
        _barrier(world)  # rank 0 merges the parts
        return mine
    # rank 0 merges: what was there, then every rank's part (a part's rows replace the old ones they update)
    if world > 1:
        parts = [pd.read_csv(p) for p in sorted(out.glob('results.rank*.csv')) if p.stat().st_size > 0]
        parts = [p for p in parts if len(p)]
        if parts:
            results = pd.concat(parts[::-1] + [results], ignore_index=True)
            results = results.drop_duplicates(['norm', 'run'], keep='first')
        cparts = [pd.read_csv(p) for p in sorted(out.glob('curves.rank*.csv')) if p.stat().st_size > 0]
        curves = pd.concat([curves] + [c for c in cparts if len(c)], ignore_index=True)
        curves = curves.drop_duplicates(['norm', 'run', 'epoch'])
        _write_csv(curves, cur_path)
        _write_csv(_canonical(results, cfg.norms), res_path)
        for p in list(out.glob('results.rank*.csv')) + list(out.glob('curves.rank*.csv')): p.unlink()
    results = _canonical(results, cfg.norms)
    _report(results, curves, cfg, shifts, df, kind, out, log)
    _barrier(world)
    return results

def _report(results, curves, cfg, shifts, df, kind, out, log):
    "summary.md, comparison.png and curves.png from the rows of the runs asked for"
    results = results[results['norm'].isin(cfg.norms) & (results['run'] < cfg.runs)]
    base = 'none' if 'none' in cfg.norms else cfg.norms[0]
    summary = summarize(results, baseline=base, order=cfg.norms)
    md = summary_markdown(summary, cfg, n_classes=df['category' if kind == 'esc50' else 'label'].nunique(),
                          legend={n: NORMS[n].doc for n in cfg.norms})
    conds = [s.name for s in shifts if f'acc@{s.name}' in results]
    shift_sum = summarize_shifts(results, conds, baseline=base, order=cfg.norms) if conds else None
    if shift_sum is not None: md += '\n' + shift_markdown(shift_sum, base)
    with atomic_path(out/'summary.md') as tmp: tmp.write_text(md)
    plot_comparison(results, summary, out/'comparison.png', order=cfg.norms, shift_summary=shift_sum)
    plot_curves(curves[curves['norm'].isin(cfg.norms) & (curves['run'] < cfg.runs)], out/'curves.png', order=cfg.norms)
    log('\n' + md)
