"""`run_comparison`, top-down: check the output folder (and what a resume continues), plan the jobs, evaluate kept
models under new shifts, train the missing jobs, merge and report. The ranks of a launch share the jobs without
talking to each other: `Ranks` holds their lock and names their parts (see `ranks`)."""
from __future__ import annotations
import json
from dataclasses import replace
from pathlib import Path
import pandas as pd
from fastai.torch_core import set_seed
from fastprogress.fastprogress import progress_bar
from ..data import check_batch_size
from ..utils import atomic_path
from .. import __version__
from .config import CompareConfig
from .recipes import RECIPES
from .datasets import resolve_data, make_dls
from .shift import parse_shifts
from .evaluate import ShiftedValid, Adapted
from .jobs import Job, model_path, train_job, evaluate_kept
from .ranks import Ranks, part_files
from .results import Ledger
from .report import write_report

__all__ = ['run_comparison', 'check_same_settings']

def _read_config(f:Path):
    "What the JSON file `f` holds, or a ValueError naming it"
    try: return json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"--resume: {f} is not the JSON fastnorm writes ({type(e).__name__}: {e}): "
                         "remove it to resume with today's settings, or use another --out") from None

def _same_launch(out:Path, launch:str|None)->bool:
    "`out/config.json` was written by a rank of this launch (whose rows are there already)"
    try: old = _read_config(out/'config.json') if launch is not None and (out/'config.json').exists() else None
    except ValueError: return False
    return isinstance(old, dict) and old.get('launch') == launch

def _check_out(out:Path, resume:bool, launch:str|None=None):
    "`out` holds no comparison, unless this is a `resume` or another rank of this `launch` began it"
    if ((out/'results.csv').exists() or part_files(out, 'results')) and not resume and not _same_launch(out, launch):
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
    old = _read_config(f)
    if not isinstance(old, dict):
        raise ValueError(f"--resume: {f} holds a {type(old).__name__}, not the settings (a JSON object) fastnorm "
                         "writes")
    # through JSON, so a tuple compares equal to the list it was saved as
    diff = {k: (old.get(k), v) for k, v in json.loads(json.dumps(cfg.key())).items() if old.get(k) != v}
    if diff:
        raise ValueError(f"--resume: {out} holds a comparison made with other settings {diff} (old, new): "
                         "use another --out")

def _open(cfg:CompareConfig, out:Path, ranks:Ranks, shifts:list, resume:bool)->tuple:
    """(cfg, data, ledger), under the ranks' lock: `out` checked, the data resolved (the first rank makes it, the
    others find it) and `--folds all` with it, the settings checked against a resumed comparison's and kept, what a
    resume continues read"""
    _check_out(out, resume, ranks.launch)
    data = resolve_data(cfg.data, cfg.cv if cfg.folds != 'all' else 'all', cfg.speaker, cfg.subset)
    if cfg.folds == 'all':
        cfg = replace(cfg, folds=data.folds)
    check_batch_size(data.n_train, cfg.bs, f'the training set of --data {cfg.data}')
    if resume: check_same_settings(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    launch = {} if ranks.launch is None else {'launch': ranks.launch}
    with atomic_path(out/'config.json') as tmp:
        tmp.write_text(json.dumps({**cfg.key(), 'fastnorm': __version__, **launch}, indent=1))
    return cfg, data, Ledger(out, cfg.norms, [s.column for s in shifts], ranks, resume, fold=cfg.fold)

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
    @property
    def jobs(self)->list:
        "Every job, run by run, each run fold by fold (every fold of a run shares its seed: runs pair by seed and fold)"
        cfg = self.cfg
        return [Job(n, r, cfg.seed + r, f) for r in range(cfg.runs) for f in cfg.cv for n in cfg.norms]
    def todo(self, ledger:Ledger, jobs:list)->tuple:
        """(to evaluate, to train) of `jobs`: trained but not under every shift, their weights kept; not trained"""
        done, missing = ledger.done, lambda j: ledger.missing(j.key, self.targets)
        evals = [j for j in jobs if j.key in done and missing(j) and model_path(self.out, j).exists()]
        return evals, [j for j in jobs if j.key not in done]
    def plan(self)->tuple:
        "(to evaluate, to train): this rank's share of the jobs, less what `out` holds"
        mine, done = self.ranks.share(self.jobs), self.ledger.done
        for j in mine:
            if j.key in done and self.ledger.missing(j.key, self.targets) and not model_path(self.out, j).exists():
                self.log(f"{self.name(j)}: its weights are not in {self.out/'models'}, so it cannot be evaluated "
                         f"under {', '.join(s.name for s in self.ledger.missing(j.key, self.targets))}")
        evals, train = self.todo(self.ledger, mine)
        if done:
            n = len(done) if self.ranks.world == 1 else sum(j.key in done for j in mine)
            self.log(f"resuming: {n} run(s) already in {self.out/'results.csv'}, {len(train)} to train, "
                     f"{len(evals)} to evaluate under new shifts")
        return evals, train
    def make_caches(self):
        "The feature caches, one per waveform normalization (the first rank makes them, the others find them)"
        for wave in sorted({RECIPES[n].wave for n in self.cfg.norms}):  # one cache serves every fold
            make_dls(self.data, self.cfg, wave, self.cfg.cv[0], self.progress and self.ranks.main)
    def shifted(self, dls, fold:int)->ShiftedValid:
        """The shifted validation set of `fold`, made from its first job's DataLoaders (every recipe validates on the
        same clips)"""
        if fold not in self._shifted:
            self._shifted[fold] = ShiftedValid(dls, self.targets, seed=self.cfg.seed)
        return self._shifted[fold]
    def evaluate(self, job:Job):
        "A trained job's accuracy under the shifts its row lacks, from its kept weights"
        need = self.ledger.missing(job.key, self.targets)
        set_seed(job.seed, reproducible=True)
        dls = make_dls(self.data, self.cfg, RECIPES[job.norm].wave, job.fold, False)
        got = evaluate_kept(dls, self.cfg, job, self.out, self.shifted(dls, job.fold), need)
        self.ledger.update(job.key, got)
        self.ledger.save()
        self.log(f"{self.name(job)}: evaluated under {', '.join(s.name for s in need)}")
    def train(self, job:Job):
        "Train a job, evaluate it under the shifts and save its rows"
        set_seed(job.seed, reproducible=True)
        dls = make_dls(self.data, self.cfg, RECIPES[job.norm].wave, job.fold, self.progress and self.ranks.main)
        shifted = self.shifted(dls, job.fold) if self.targets else None
        row, curve = train_job(dls, self.cfg, job, self.out, shifted, cbs=self.cbs)
        self.ledger.add(row, curve)
        self.ledger.save()
        self.log(f"{self.name(job)}: accuracy {row['final_acc']:.4f} (best {row['best_acc']:.4f}) "
                 f"in {row['seconds']:.1f}s" + ''.join(f", {s.name} {row[s.column]:.4f}" for s in self.targets))
    def report(self, ledger:Ledger)->pd.DataFrame:
        "The rows of `ledger` merged, summary.md and the plots written; returns the results"
        results, curves = ledger.merge()
        legend = {n: RECIPES[n].doc for n in self.cfg.norms}
        md = write_report(results, curves, self.cfg, self.shifts, self.data.n_classes, legend, self.out)
        self.log('\n' + md)
        return results
    def finish(self)->pd.DataFrame:
        """The results, reported by the only rank, or by the rank that finds every job saved (the last to finish) with
        parts to merge or no report yet; on another rank, the rows it made"""
        if self.ranks.world == 1:
            return self.report(self.ledger)
        with self.ranks.lock(self.out):
            whole = Ledger(self.out, self.cfg.norms, [s.column for s in self.targets], self.ranks, True, self.cfg.fold)
            fresh = part_files(self.out, 'results') or not (self.out/'summary.md').exists()
            if fresh and not any(self.todo(whole, self.jobs)):
                return self.report(whole)
        return self.ledger.own_rows()

def _progress(jobs:list, show:bool):
    return progress_bar(jobs) if show and jobs else jobs

def run_comparison(cfg:CompareConfig, # what to compare
                   out='runs/compare', # the folder for results, curves, statistics, weights and the report
                   resume:bool=False, # complete the comparison in `out` (made with the same settings)
                   progress:bool=True, # progress bars
                   log=print, # where the per-run lines go
                   cbs=None, # fastai callbacks added to every training; the learner's job is `learn.job`
                  )->pd.DataFrame:
    """Train every (normalization, run, fold) job that `out/results.csv` lacks, saving after each, and evaluate each
    model under `cfg.shifts`; then write the summary and plots. Under `torchrun` each rank trains its share of the jobs
    (every world-size-th), each a single-process training, and the last to finish merges and reports; when one rank
    fails, torchrun stops the others, and the rows already saved stay for `resume` (see `ranks`)"""
    cfg.check()
    out = Path(out)
    ranks = Ranks.join()
    shifts = parse_shifts(cfg.shifts, seed=cfg.seed)
    with ranks.alone():
        with ranks.lock(out):
            run = _Comparison(cfg, out, ranks, shifts, resume, progress, log, cbs)
            run.make_caches()
        evals, train = run.plan()
        for job in _progress(evals, progress and ranks.main):
            run.evaluate(job)
        for job in _progress(train, progress and ranks.main):
            run.train(job)
        return run.finish()
