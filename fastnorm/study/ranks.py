"""The comparison under torch.distributed (`torchrun`, `accelerate launch`): which process this is, how the jobs are
shared, where each rank keeps its rows until rank 0 merges them. All the rank bookkeeping of `run_comparison` is here,
so the run reads as if it were one process."""
from __future__ import annotations
import os
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
import torch
from fastprogress.fastprogress import progress_bar

__all__ = ['Ranks', 'one_process', 'part_files']

def _join_group():
    "Join the process group torchrun's environment describes (NCCL on GPUs, gloo on CPUs)"
    import torch.distributed as dist
    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
    # a rank with one job fewer waits at the final barrier for a whole run: the default 30 min is too short
    dist.init_process_group('nccl' if cuda else 'gloo', timeout=timedelta(hours=48))

def part_files(out:Path, name:str)->list:
    "The per-rank parts `name.rankK.csv` in `out`, in rank order as the names sort"
    return sorted(Path(out).glob(f'{name}.rank*.csv'))

class Ranks:
    "This process's rank among `world` (1 and 0 when not distributed) and what follows from it"
    def __init__(self, rank:int=0, world:int=1):
        self.rank, self.world = rank, world
    @classmethod
    def join(cls)->Ranks:
        "The ranks from torch.distributed's environment (`WORLD_SIZE`, `RANK`); joins the process group"
        world, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
        if world > 1:
            _join_group()
        return cls(rank, world)
    @property
    def main(self)->bool:
        "Rank 0: it makes what all share (data, feature caches), merges the parts and writes the report"
        return self.rank == 0
    def barrier(self):
        "Wait for every rank"
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()
    def main_first(self, f):
        "`f()` on rank 0, then on the others (which find what rank 0 made, e.g. a downloaded dataset)"
        if self.main:
            res = f()
        self.barrier()
        if not self.main:
            res = f()
        return res
    def share(self, jobs:list)->list:
        "This rank's share of `jobs`: every `world`-th, from its rank on"
        return jobs[self.rank::self.world]
    def part(self, out:Path, name:str)->Path:
        "Where this rank writes its rows of `name`: its own part among several ranks, else `name.csv` itself"
        return out/f'{name}.rank{self.rank}.csv' if self.world > 1 else out/f'{name}.csv'
    def log(self, log):
        "`log` with lines marked by rank among several"
        if self.world == 1:
            return log
        tag = f'[rank {self.rank}/{self.world}]'
        return lambda *a: log(tag, *a)
    def progress(self, jobs:list, progress:bool):
        "`jobs` with a progress bar on rank 0"
        return progress_bar(jobs) if progress and jobs and self.main else jobs

@contextmanager
def one_process():
    """Each job is a single-process training: hide the process group from fastai, whose metrics and losses would
    otherwise all-gather across ranks (`maybe_gather` reads WORLD_SIZE) while each rank trains another model"""
    old = {k: os.environ.get(k) for k in ('WORLD_SIZE', 'RANK')}
    os.environ.update(WORLD_SIZE='1', RANK='0')
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
