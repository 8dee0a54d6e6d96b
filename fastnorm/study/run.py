"""`run_comparison`, top-down: check the output folder (and what a resume continues), plan the jobs, evaluate kept
models under new shifts, train the missing jobs, merge and report. The ranks of a distributed run share the jobs;
`Ranks` keeps that bookkeeping out of the phases."""
from __future__ import annotations
import json
from dataclasses import replace
from pathlib import Path
import pandas as pd
from fastai.torch_core import set_seed
from ..data import check_batch_size
from ..utils import atomic_path
from .. import __version__
from .config import CompareConfig
from .recipes import RECIPES
from .datasets import resolve_data, make_dls
from .shift import parse_shifts
from .evaluate import ShiftedValid, Adapted
from .jobs import Job, model_path, train_job, evaluate_kept
from .ranks import Ranks, one_process, part_files
from .results import Ledger
from .report import write_report

__all__ = ['run_comparison', 'check_same_settings']

def _check_out(out:Path, resume:bool):
    "`out` holds no comparison, unless this is a `resume`"
    if ((out/'results.csv').exists() or part_files(out, 'results')) and not resume:
        raise FileExistsError(f"{out/'results.csv'} exists: pass --resume to complete that comparison, "
                              "or choose another --out")

def check_same_settings(cfg:CompareConfig, # the settings of the comparison to resume
                        out:Path, # its `--out`
                       ):
    """Refuse, naming the file, a comparison in `out` made with other settings than `cfg` (its `config.json`, when
    there is one: what `--resume` checks before it continues)"""
    if not (out/'config.json').exists():
        return
    f = out/'config.json'
    try: old = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"--resume: {f} is not the JSON fastnorm writes ({type(e).__name__}: {e}): "
                         "remove it to resume with today's settings, or use another --out") from None
    if not isinstance(old, dict):
        raise ValueError(f"--resume: {f} holds a {type(old).__name__}, not the settings (a JSON object) fastnorm "
                         "writes")
    # through JSON, so a tuple compares equal to the list it was saved as
    diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(cfg.key())).items() if old.get(k) != v}
    if diff:
        raise ValueError(f"--resume: {out} holds a comparison made with other settings {diff} (old, new): "
                         "use another --out")

def _open(cfg:CompareConfig, out:Path, ranks:Ranks, shifts:list, resume:bool)->tuple:
    """(cfg, data, ledger): the data resolved (rank 0 first: it may make it) and `--folds all` with it, the settings
    checked against a resumed comparison's and kept, what a resume continues read"""
    data = ranks.main_first(lambda: resolve_data(cfg.data, cfg.cv if cfg.folds != 'all' else 'all', cfg.speaker,
                                                 cfg.subset), 'data')
    if cfg.folds == 'all':
        cfg = replace(cfg, folds=data.folds)
    check_batch_size(data.n_train, cfg.bs, f'the training set of --data {cfg.data}')
    if resume: check_same_settings(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    if ranks.main:
        with atomic_path(out/'config.json') as tmp:
            tmp.write_text(json.dumps({**cfg.key(), 'fastnorm': __version__}, indent=1))
    ledger = Ledger(out, cfg.norms, [s.column for s in shifts], ranks, resume, fold=cfg.fold)
    ranks.wait('read')  # every rank has read what is there before anyone writes its own part
    return cfg, data, ledger

class _Comparison:
    "The state the phases share: settings, data, the ranks, the rows and the shifted validation sets"
    def __init__(self, cfg:CompareConfig, out:Path, ranks:Ranks, shifts:list, resume:bool, progress:bool, log, cbs):
        self.out, self.ranks, self.shifts, self.progress, self.cbs = out, ranks, shifts, progress, cbs
        self.log = ranks.log(log)
        # the evaluation conditions: each shift, and each (unshifted or shift, adaptation method)
        self.targets = shifts + [Adapted(s, m, cfg.adapt_clips) for s in [None, *shifts] for m in cfg.adapt]
        self.cfg, self.data, self.ledger = _open(cfg, out, ranks, self.targets, resume)
        self._shifted = {}
    def name(self, job:Job)->str:
        "How the log names a job"
        return f"run {job.run}" + (f" fold {job.fold}" if self.cfg.folds is not None else '') + f" {job.norm:>8}"
    def plan(self)->tuple:
        """(to evaluate, to train): jobs trained but not under every shift, and jobs not trained; run by run, each run
        fold by fold (every fold of a run shares its seed, so runs pair by seed and fold)"""
        cfg, done = self.cfg, self.ledger.done
        jobs = [Job(n, r, cfg.seed + r, f) for r in range(cfg.runs) for f in cfg.cv for n in cfg.norms]
        evals = [j for j in jobs if j.key in done and self.ledger.missing(j.key, self.targets)]
        train = [j for j in jobs if j.key not in done]
        if done and self.ranks.main:
            self.log(f"resuming: {len(done)} run(s) already in {self.out/'results.csv'}, {len(train)} to train, "
                     f"{len(evals)} to evaluate under new shifts")
        return evals, train
    def make_caches(self):
        "The feature caches, one per waveform normalization, made by rank 0 before the other ranks look for them"
        if self.ranks.main:
            with one_process():
                for wave in sorted({RECIPES[n].wave for n in self.cfg.norms}):  # one cache serves every fold
                    make_dls(self.data, self.cfg, wave, self.cfg.cv[0], self.progress)
        self.ranks.wait('caches')
    def shifted(self, dls, fold:int)->ShiftedValid:
        """The shifted validation set of `fold`, made from its first job's DataLoaders (every recipe validates on the
        same clips)"""
        if fold not in self._shifted:
            self._shifted[fold] = ShiftedValid(dls, self.targets, seed=self.cfg.seed)
        return self._shifted[fold]
    def evaluate(self, job:Job):
        "A trained job's accuracy under the shifts its row lacks, from its kept weights"
        need = self.ledger.missing(job.key, self.targets)
        if not model_path(self.out, job).exists():
            self.log(f"{self.name(job)}: its weights are not in {self.out/'models'}, "
                     f"so it cannot be evaluated under {', '.join(s.name for s in need)}")
            return
        set_seed(job.seed, reproducible=True)
        with one_process():
            dls = make_dls(self.data, self.cfg, RECIPES[job.norm].wave, job.fold, False)
            got = evaluate_kept(dls, self.cfg, job, self.out, self.shifted(dls, job.fold), need)
        self.ledger.update(job.key, got)
        self.ledger.save()
        self.log(f"{self.name(job)}: evaluated under {', '.join(s.name for s in need)}")
    def train(self, job:Job):
        "Train a job, evaluate it under the shifts and save its rows"
        set_seed(job.seed, reproducible=True)
        with one_process():
            dls = make_dls(self.data, self.cfg, RECIPES[job.norm].wave, job.fold, self.progress and self.ranks.main)
            shifted = self.shifted(dls, job.fold) if self.targets else None
            row, curve = train_job(dls, self.cfg, job, self.out, shifted, cbs=self.cbs)
        self.ledger.add(row, curve)
        self.ledger.save()
        self.log(f"{self.name(job)}: accuracy {row['final_acc']:.4f} (best {row['best_acc']:.4f}) "
                 f"in {row['seconds']:.1f}s" + ''.join(f", {s.name} {row[s.column]:.4f}" for s in self.targets))
    def report(self)->pd.DataFrame:
        "On rank 0: every rank's rows merged, summary.md and the plots written; returns the results"
        results, curves = self.ledger.merge()
        legend = {n: RECIPES[n].doc for n in self.cfg.norms}
        md = write_report(results, curves, self.cfg, self.shifts, self.data.n_classes, legend, self.out)
        self.log('\n' + md)
        return results
    def finish(self)->pd.DataFrame:
        "Once every rank is done, rank 0 reports; returns the results (on another rank, the rows it made)"
        self.ranks.wait('jobs done')
        results = self.report() if self.ranks.main else self.ledger.own_rows()
        self.ranks.wait('report')  # the other ranks wait for the report: its failure is theirs
        return results

def run_comparison(cfg:CompareConfig, # what to compare
                   out='runs/compare', # the folder for results, curves, statistics, weights and the report
                   resume:bool=False, # complete the comparison in `out` (made with the same settings)
                   progress:bool=True, # progress bars
                   log=print, # where the per-run lines go
                   cbs=None, # fastai callbacks added to every training; the learner's job is `learn.job`
                  )->pd.DataFrame:
    """Train every (normalization, run, fold) job that `out/results.csv` lacks, saving after each, and evaluate each
    model under `cfg.shifts`; then write the summary and plots. Under `torchrun` the jobs are shared among the ranks by
    rank and world size, each job a single-process training; when one rank fails, every rank stops at its next job or
    wait with that rank's error, keeping the rows already saved for `resume` (see `ranks`)"""
    cfg.check()
    out = Path(out)
    _check_out(out, resume)
    shifts = parse_shifts(cfg.shifts, seed=cfg.seed)
    ranks = Ranks.join(out)
    with ranks.watch():
        run = _Comparison(cfg, out, ranks, shifts, resume, progress, log, cbs)
        evals, train = run.plan()
        run.make_caches()
        for job in ranks.progress(ranks.share(evals), progress):
            ranks.check()
            run.evaluate(job)
        for job in ranks.progress(ranks.share(train), progress):
            ranks.check()
            run.train(job)
        return run.finish()
