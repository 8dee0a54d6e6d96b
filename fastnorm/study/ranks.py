"""The comparison's jobs shared among the processes `torchrun` (or `accelerate launch`) starts. They never talk: no
process group is joined, and a file lock in `out` (`filelock`: an OS lock, released when its process ends, however it
ends) orders what they share. Whoever takes it first makes the data and the feature caches, the others find them
made; each rank trains its share of the jobs and saves its rows in its own part; whoever then finds every job saved
merges the parts and reports (see `run`). When a rank fails, torchrun stops the others."""
from __future__ import annotations
import os, socket
from contextlib import nullcontext
from pathlib import Path
import torch
from filelock import FileLock
from fastcore.xtras import modified_env

__all__ = ['Ranks', 'part_files']

def part_files(out:Path, name:str)->list:
    "The per-rank parts `name.rankK.csv` in `out`, in rank order as the names sort"
    return sorted(Path(out).glob(f'{name}.rank*.csv'))

class Ranks:
    "This process's `rank` among `world` (0 of 1 without a launcher) and what follows from it"
    def __init__(self, rank:int=0, world:int=1): self.rank, self.world = rank, world
    @classmethod
    def join(cls)->Ranks:
        "The ranks from the launcher's environment (`WORLD_SIZE`, `RANK`); each rank on its own GPU where there are any"
        world, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
        import torch.distributed as dist
        if world > 1 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise RuntimeError("the comparison's ranks train independent models and never talk: run it without a "
                               "process group (torchrun starts none; do not call init_process_group)")
        if world > 1 and torch.cuda.is_available(): torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        return cls(rank, world)
    @property
    def main(self)->bool: return self.rank == 0  # it shows the progress bars
    @property
    def launch(self)->str|None:
        "What names this launch among several: torchrun's run id, else its agent's process on this host"
        if self.world == 1: return None
        rid = os.environ.get('TORCHELASTIC_RUN_ID', 'none')
        return rid if rid != 'none' else f'{socket.gethostname()}-{os.getppid()}'
    def lock(self, out:Path):
        "Held while a rank makes or merges what the ranks share in `out` (nothing to hold in one process)"
        if self.world == 1: return nullcontext()
        Path(out).mkdir(parents=True, exist_ok=True)
        return FileLock(Path(out)/'.lock')
    def alone(self):
        "Hide the launch from fastai, whose metrics would otherwise gather across ranks that train other models"
        return modified_env('WORLD_SIZE', 'RANK') if self.world > 1 else nullcontext()
    def share(self, jobs:list)->list: return jobs[self.rank::self.world]  # every `world`-th, from its rank on
    def part(self, out:Path, name:str)->Path:
        "Where this rank writes its rows of `name`: its own part among several ranks, else `name.csv` itself"
        return out/f'{name}.rank{self.rank}.csv' if self.world > 1 else out/f'{name}.csv'
    def log(self, log):
        "`log` with lines marked by rank among several"
        return log if self.world == 1 else (lambda *a: log(f'[rank {self.rank}/{self.world}]', *a))
