"""The comparison under torch.distributed (`torchrun`, `accelerate launch`): which process this is, how the jobs are
shared, where each rank keeps its rows until rank 0 merges them, and how the ranks wait for each other. All the rank
bookkeeping of `run_comparison` is here, so the run reads as if it were one process.

Every job is a single-process training (`one_process`): nothing inside it talks to another rank, so two ranks may
compute different statistics at the same time, or one none at all. The ranks meet only between phases, and not through
collectives: the process group is joined for one thing, agreeing on a launch id, and left at once. Then each rank
writes small files in `out/.ranks/<launch id>/` (the ranks share `out` anyway, for their results): that it reached a
stage, that it failed and with which error, and a heartbeat. A rank waiting for the others returns when all have
reached the stage and raises, within seconds, when one failed, or stopped beating for `timeout` seconds. So a rank can
wait hours for a slower one at the end without a collective timeout of hours, and one failure ends every rank."""
from __future__ import annotations
import os, shutil, threading, time, traceback, uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
import torch
from fastprogress.fastprogress import progress_bar

__all__ = ['Ranks', 'RankFailed', 'one_process', 'part_files', 'DIST_TIMEOUT']

# seconds: joining the process group, and how long a rank may go without a heartbeat before the others give up on it
# (a heartbeat comes every `BEAT` s from a thread, whatever the rank is doing; override with $FASTNORM_DIST_TIMEOUT)
DIST_TIMEOUT = 300
BEAT = 1.0
POLL = 0.2

class RankFailed(RuntimeError):
    "Another rank of the comparison failed, or stopped answering"

def _timeout()->float:
    v = os.environ.get('FASTNORM_DIST_TIMEOUT')
    if v is None: return float(DIST_TIMEOUT)
    try: t = float(v)
    except ValueError: t = 0.
    if not t > 0: raise ValueError(f"$FASTNORM_DIST_TIMEOUT must be a positive number of seconds, not {v!r}")
    return t

def _launch_id(world:int, timeout:float)->str:
    """A name shared by the ranks of this launch and no other, from rank 0 through the process group torchrun's
    environment describes (gloo: a few bytes on the CPU, even on GPUs), which is left afterwards unless it was there"""
    import torch.distributed as dist
    mine = not dist.is_initialized()
    if mine:
        dist.init_process_group('gloo', timeout=timedelta(seconds=timeout))
    try:
        got = [uuid.uuid4().hex[:12] if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(got, src=0)
        return got[0]
    finally:
        if mine:
            dist.destroy_process_group()

def part_files(out:Path, name:str)->list:
    "The per-rank parts `name.rankK.csv` in `out`, in rank order as the names sort"
    return sorted(Path(out).glob(f'{name}.rank*.csv'))

class Ranks:
    """This process's rank among `world` (1 and 0 when not distributed) and what follows from it. Among several, `dir`
    is this launch's folder of stage, failure and heartbeat files"""
    def __init__(self, rank:int=0, world:int=1, dir:Path|None=None, timeout:float|None=None):
        self.rank, self.world, self.dir = rank, world, None if dir is None else Path(dir)
        self.timeout = _timeout() if timeout is None else timeout
        self._stage = 0
        if world > 1 and self.dir is None:
            raise ValueError("several ranks need a folder to meet in (`dir`)")
    @classmethod
    def join(cls, out:Path)->Ranks:
        """The ranks from torch.distributed's environment (`WORLD_SIZE`, `RANK`), meeting in `out/.ranks/`, where rank
        0 first removes what earlier launches left"""
        world, rank = int(os.environ.get('WORLD_SIZE', 1)), int(os.environ.get('RANK', 0))
        if world == 1:
            return cls()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        timeout = _timeout()
        root = Path(out)/'.ranks'
        if rank == 0 and root.exists():  # before the id is shared: no rank of this launch writes there yet
            shutil.rmtree(root, ignore_errors=True)
        d = root/_launch_id(world, timeout)
        d.mkdir(parents=True, exist_ok=True)
        return cls(rank, world, d, timeout)
    @property
    def main(self)->bool:
        "Rank 0: it makes what all share (data, feature caches), merges the parts and writes the report"
        return self.rank == 0
    def _file(self, what:str, rank:int)->Path: return self.dir/f'{what}.rank{rank}'
    def _post(self, what:str, text:str=''):
        tmp = self.dir/f'.{what}.rank{self.rank}.tmp'
        tmp.write_text(text)
        os.replace(tmp, self._file(what, self.rank))
    def check(self):
        "Raise `RankFailed` if another rank has failed"
        if self.world == 1:
            return
        for r in range(self.world):
            f = self._file('failed', r)
            if r != self.rank and f.exists():
                raise RankFailed(f"rank {r} of {self.world} failed, so rank {self.rank} stops:\n{f.read_text()}")
    def _silent(self, r:int, since:float)->bool:
        "Rank `r` has not beaten for `timeout` seconds (counted from `since` at the earliest: it may be starting)"
        f = self._file('alive', r)
        last = max(f.stat().st_mtime if f.exists() else 0., since)
        return time.time() - last > self.timeout
    def wait(self, what:str):
        """Wait until every rank has reached stage `what` (the stages are counted, so every rank must wait at the same
        ones in the same order); raise `RankFailed` as soon as one has failed or has stopped beating"""
        if self.world == 1:
            return
        self._stage += 1
        stage, since = f'{self._stage:03d}-{what}', time.time()
        self._post(stage)
        while True:
            self.check()
            missing = [r for r in range(self.world) if not self._file(stage, r).exists()]
            if not missing:
                return
            dead = [r for r in missing if self._silent(r, since)]
            if dead:
                raise RankFailed(f"rank {dead[0]} of {self.world} has not answered for {self.timeout:.0f} s while rank "
                                 f"{self.rank} waits for it at '{what}': it was killed or hangs "
                                 "(set $FASTNORM_DIST_TIMEOUT for another limit)")
            time.sleep(POLL)
    @contextmanager
    def watch(self):
        """Beat while the block runs; if it raises, leave the error for the other ranks (which stop at their next job
        or wait) before raising it here"""
        if self.world == 1:
            yield self
            return
        stop = threading.Event()
        def beat():
            while not stop.is_set():
                self._file('alive', self.rank).touch()
                stop.wait(BEAT)
        beating = threading.Thread(target=beat, daemon=True, name=f'fastnorm-rank{self.rank}-heartbeat')
        beating.start()
        try:
            yield self
        except BaseException as e:
            if not isinstance(e, RankFailed):  # the first failure is the one to report
                self._post('failed', ''.join(traceback.format_exception(e)[-12:]))
            raise
        finally:
            stop.set()
            beating.join()
    def main_first(self, f, what:str='main first'):
        "`f()` on rank 0, then on the others (which find what rank 0 made, e.g. a downloaded dataset)"
        if self.main:
            res = f()
        self.wait(what)
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
    """Each job is a single-process training. fastnorm's own statistics pass is told so explicitly (`sync='local'` in
    `recipes`), and no process group is joined while jobs run; this hides the launch from fastai too, whose metrics
    and losses would otherwise all-gather across ranks (`maybe_gather` reads WORLD_SIZE) while each trains another
    model"""
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
