"""Scale-out that is correct: `fastnorm compare` under torchrun gives exactly the single-process results for any split of
its jobs (uneven, a rank with none, different statistics at the same time, folds, resume), fails promptly on every rank
when one fails (torchrun stops the others), and no rank talks to another"""
import os, re, subprocess, sys
from pathlib import Path
import pandas as pd
import pytest
from fastnorm.study.ranks import Ranks

ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}
COMMON = ['--epochs', '1', '--bs', '8', '--no-progress']


# ---- the ranks of a comparison never talk: a file lock orders what they share ----
def test_ranks_share_a_lock_in_out_and_hide_the_launch_from_fastai(tmp_path, monkeypatch):
    from filelock import FileLock, Timeout
    from fastai.torch_core import num_distrib
    one, r1 = Ranks(), Ranks(1, 3)
    with one.lock(tmp_path/'a'):
        assert not (tmp_path/'a').exists()  # one process: nothing to lock, nothing made
    lock = r1.lock(tmp_path/'b')
    assert isinstance(lock, FileLock) and lock.lock_file == str(tmp_path/'b'/'.lock')
    with lock:
        with pytest.raises(Timeout):  # another holder waits (here: gives up at once)
            FileLock(tmp_path/'b'/'.lock').acquire(timeout=0)
    monkeypatch.setenv('WORLD_SIZE', '3')
    monkeypatch.setenv('RANK', '1')
    with r1.alone():
        assert num_distrib() == 0
    assert num_distrib() == 3
    monkeypatch.setenv('TORCHELASTIC_RUN_ID', 'abc')
    assert r1.launch == 'abc' and one.launch is None


# ---- torchrun: any split gives the single-process results ----
def _compare(data, out, *args, nproc=1, driver=None, timeout=600, **env):
    launch = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', str(nproc)] if nproc > 1 \
        else [sys.executable]
    cmd = [*launch, *([str(driver)] if driver else ['-m', 'fastnorm', 'compare']), '--data', str(data), *COMMON, *args,
           '--out', str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**ENV, **env}, timeout=timeout)


def _rows(out, **where):
    df = pd.read_csv(Path(out)/'results.csv').drop(columns='seconds')
    for k, v in where.items():
        df = df[df[k].isin(v)]
    return df.sort_values(['run', 'fold', 'norm']).reset_index(drop=True)


@pytest.fixture(scope='module')
def single(tiny_esc50, tmp_path_factory):
    "One process, every job the torchrun tests split: none/global/channel x 2 runs on fold 1"
    out = tmp_path_factory.mktemp('single')/'out'
    r = _compare(tiny_esc50, out, '--runs', '2', '--norms', 'none,global,channel')
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_the_issue_command_finishes_and_equals_one_process(tiny_esc50, single, tmp_path):
    "none x 2 on rank 0 while rank 1 computes global statistics: it used to hang in the all-reduce"
    r = _compare(tiny_esc50, tmp_path/'two', '--runs', '2', '--norms', 'none,global', nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _rows(tmp_path/'two').equals(_rows(single, norm=['none', 'global']))


@pytest.mark.slow
def test_three_ranks_different_statistics_at_once_and_a_rank_with_no_job(tiny_esc50, single, tmp_path):
    "3 ranks, 3 jobs: global and channel statistics at the same time; 3 ranks, 2 jobs: rank 2 has none"
    r = _compare(tiny_esc50, tmp_path/'mixed', '--runs', '1', '--norms', 'none,global,channel', nproc=3)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _rows(tmp_path/'mixed').equals(_rows(single, run=[0]))
    r = _compare(tiny_esc50, tmp_path/'idle', '--runs', '1', '--norms', 'global,channel', nproc=3)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _rows(tmp_path/'idle').equals(_rows(single, run=[0], norm=['global', 'channel']))


@pytest.mark.slow
def test_folds_under_torchrun_equal_one_process(tiny_esc50, tmp_path):
    args = ['--runs', '1', '--norms', 'none,channel', '--folds', '1,2']
    one = _compare(tiny_esc50, tmp_path/'one', *args)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _compare(tiny_esc50, tmp_path/'two', *args, nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _rows(tmp_path/'two').equals(_rows(tmp_path/'one')) and len(_rows(tmp_path/'one')) == 4


DRIVER = '''
import os, sys
from fastai.callback.core import Callback
import fastnorm.study as S
from fastnorm.cli import main
RANK = os.environ.get('RANK')  # read before the jobs hide the launch from fastai

class FailOnRank1(Callback):
    "rank 1 fails on purpose in its second job, after saving its first"
    def before_fit(self):
        if RANK == '1' and os.environ.get('FAIL') == '1' and self.learn.job.run == 1:
            raise RuntimeError('rank one fails on purpose')

real = S.run_comparison
S.run_comparison = lambda cfg, **kw: real(cfg, cbs=[FailOnRank1()], **kw)  # what the CLI calls
sys.argv = ['fastnorm', 'compare', *sys.argv[1:]]
main()
'''


@pytest.mark.slow
def test_a_failing_rank_ends_every_rank_then_resume_completes(tiny_esc50, single, tmp_path):
    "Rank 1 raises in its second job: both ranks exit non-zero with its error, the rows saved stay; --resume finishes"
    driver = tmp_path/'driver.py'
    driver.write_text(DRIVER)
    args = ['--runs', '2', '--norms', 'none,global']  # rank 0: none 0, none 1; rank 1: global 0, global 1
    r = _compare(tiny_esc50, tmp_path/'o', *args, nproc=2, driver=driver, timeout=300, FAIL='1')
    assert r.returncode != 0
    # rank 1's traceback, then torchrun's report of it; torchrun stopped rank 0 (or it had finished its share)
    report = r.stderr[r.stderr.index('ChildFailedError'):]
    assert re.search(r'rank\s*: 1 \(local_rank: 1\)', report) and 'Traceback' in report, report
    assert 'rank one fails on purpose' in report
    assert pd.read_csv(tmp_path/'o'/'results.rank1.csv')[['norm', 'run']].values.tolist() == [['global', 0]]
    kept = pd.read_csv(tmp_path/'o'/'results.rank0.csv')[['norm', 'run']].values.tolist()
    assert kept in ([['none', 0]], [['none', 0], ['none', 1]])
    r = _compare(tiny_esc50, tmp_path/'o', *args, '--resume', nproc=2, driver=driver)
    assert r.returncode == 0, r.stderr[-3000:]
    # each rank counts the rows of its own share: a rank's share is every second job of the whole list
    said = re.findall(r'resuming: (\d+) run\(s\) already', r.stdout + r.stderr)
    assert sorted(map(int, said)) == sorted([len(kept), 1])
    assert _rows(tmp_path/'o').equals(_rows(single, norm=['none', 'global']))
