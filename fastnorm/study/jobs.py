"""One job of the comparison: a recipe's seeded run, trained (a results row, a curve, the kept weights) or, from its
kept weights, evaluated under new shifts. Both build the learner the same way, so kept weights load into the model
that made them."""
from __future__ import annotations
import functools, time, warnings
from pathlib import Path
from typing import NamedTuple
import numpy as np, pandas as pd, torch
from fastai.learner import Learner
from ..utils import atomic_path
from .recipes import RECIPES, apply_recipe
from .models import make_learner
from ..adapt import band_stats
from .evaluate import ShiftedValid

__all__ = ['Job', 'model_path', 'stats_dir', 'train_job', 'evaluate_kept']

class Job(NamedTuple):
    """Run `run` of recipe `norm`, seeded `seed`, validating on `fold` (training on the others); a learner of the
    comparison carries its job as `learn.job`"""
    norm:str
    run:int
    seed:int
    fold:int = 1
    @property
    def key(self)->tuple:
        "Its row's key in the results, `(norm, run, fold)`"
        return self.norm, self.run, self.fold

def model_path(out:Path, job:Job)->Path:
    "Where a job's weights are kept, to evaluate new shifts on resume (fastnorm 0.2's name, without the fold, if there)"
    old = out/'models'/f'{job.norm}-run{job.run}.pt'
    return old if old.exists() else out/'models'/f'{job.norm}-run{job.run}-fold{job.fold}.pt'

def stats_dir(out:Path, cfg, job:Job)->Path|None:
    """Where run 0 keeps its statistics: `out` for a single split, `out/foldK` under cross-validation (each split's
    statistics are its own training folds')"""
    if job.run != 0:
        return None
    return out if cfg.folds is None else out/f'fold{job.fold}'

def _learner(dls, cfg, job:Job, out:Path)->Learner:
    "The job's recipe inserted into `dls`, and its learner (the statistics of run 0 kept, see `stats_dir`)"
    stem = apply_recipe(dls, job.norm, frac=cfg.frac, seed=job.seed, stats_dir=stats_dir(out, cfg, job))
    learn = make_learner(dls, cfg.arch, cfg.pretrained, stem)
    learn.job = job
    return learn

def _fit(learn:Learner, cfg, cbs)->float:
    "Train with one cycle, quietly; returns the seconds it took"
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(cfg.epochs, cfg.lr, cbs=cbs)
    return time.time() - t0

def train_job(dls, # the job's DataLoaders (`make_dls`)
              cfg, # the `CompareConfig`
              job:Job,
              out:Path, # the comparison's folder: statistics and weights are kept there
              shifted:ShiftedValid|None=None, # also evaluate under its shifts
              cbs=None, # fastai callbacks for the training
             )->tuple:
    "One seeded training run; returns its results row (with an accuracy per shift) and its per-epoch curve"
    learn = _learner(dls, cfg, job, out)
    secs = _fit(learn, cfg, cbs)
    vals = np.array([[float(v) for v in row] for row in learn.recorder.values])  # train_loss, valid_loss, accuracy
    row = dict(norm=job.norm, run=job.run, fold=job.fold, seed=job.seed, final_acc=vals[-1, 2],
               best_acc=vals[:, 2].max(), train_loss=vals[-1, 0], valid_loss=vals[-1, 1], seconds=round(secs, 2))
    with atomic_path(model_path(out, job)) as tmp:
        torch.save(learn.model.state_dict(), tmp)
    if shifted is not None:
        row.update(shifted.accuracies(learn.model, dls, shifted.shifts, RECIPES[job.norm].wave, _train_stats(dls)))
    curve = pd.DataFrame(dict(norm=job.norm, run=job.run, fold=job.fold, epoch=np.arange(1, len(vals) + 1),
                              accuracy=vals[:, 2], valid_loss=vals[:, 1]))
    return row, curve

def evaluate_kept(dls, cfg, job:Job, out:Path, shifted:ShiftedValid, shifts)->dict:
    "Accuracy under `shifts` of a job trained earlier, from its kept weights (nothing is trained)"
    learn = _learner(dls, cfg, job, out)
    learn.model.load_state_dict(torch.load(model_path(out, job), map_location='cpu'))
    learn.model.to(dls.device or 'cpu')
    return shifted.accuracies(learn.model, dls, shifts, RECIPES[job.norm].wave, _train_stats(dls))

def _train_stats(dls):
    "The training set's per-bin log-mel statistics (for `Adapted` conditions' matching), computed on first use"
    return functools.cache(lambda: band_stats(dls.train))
