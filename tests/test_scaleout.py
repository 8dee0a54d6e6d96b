"""Scale-out that is correct: `fastnorm compare` under torchrun gives exactly the single-process results for any split of
its jobs (uneven, a rank with none, different statistics at the same time, folds, resume), fails promptly on every rank
when one fails, and no training pass talks to another rank (`compute_stats(sync='local')`)"""
import os, subprocess, sys, threading
from pathlib import Path
import pandas as pd
import pytest
import torch
from fastnorm.dlstats import compute_stats
from fastnorm.study.ranks import Ranks, RankFailed

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'FASTNORM_DIST_TIMEOUT': '60'}
COMMON = ['--epochs', '1', '--bs', '8', '--no-progress']


@pytest.fixture(scope='module')
def dls(tiny_esc50):
    from fastnorm.data import esc50_dls
    return esc50_dls(tiny_esc50, bs=8, sr=8000, progress=False)


# ---- the statistics pass says where it runs ----
def test_sync_local_reads_everything_and_talks_to_no_rank(dls, monkeypatch):
    "'local' ignores a process group: all batches, no all-reduce; 'all_reduce' shards; anything else is refused"
    import fastnorm.dlstats as D
    from fastnorm.stats import StatsRecorder
    whole = compute_stats(dls, scope='freq', progress=False)
    monkeypatch.setattr(D, '_rank_world', lambda: (1, 2))  # as if rank 1 of 2
    def all_reduce(self, group=None): raise RuntimeError('all-reduced')
    monkeypatch.setattr(StatsRecorder, 'all_reduce', all_reduce)
    local = compute_stats(dls, scope='freq', progress=False, sync='local', cache_stats=False)
    assert local.n == whole.n and torch.allclose(local.mean, whole.mean) and torch.allclose(local.std, whole.std)
    with pytest.raises(RuntimeError, match='all-reduced'):
        compute_stats(dls, scope='freq', progress=False, cache_stats=False)  # the default: a DDP user's all-reduce
    with pytest.raises(ValueError, match=r"`sync` must be one of \(.all_reduce., .local.\) \(.group. given\)"):
        compute_stats(dls, progress=False, sync='group')


def test_normalizers_pass_their_sync_to_the_statistics(dls, monkeypatch):
    import fastnorm.norm as N
    from fastnorm.all import FreqSpecNorm, add_spec_norm
    seen = []
    real = N.compute_stats
    monkeypatch.setattr(N, 'compute_stats', lambda dl, **kw: seen.append(kw['sync']) or real(dl, **kw))
    FreqSpecNorm(sync='local', progress=False).setup(dls.train)
    add_spec_norm(dls, 'global', progress=False)
    assert seen == ['local', 'all_reduce']
    with pytest.raises(ValueError, match=r"`sync` must be one of \(.all_reduce., .local.\) \(.nope. given\)"):
        FreqSpecNorm(sync='nope')


# ---- how the ranks of a comparison wait for each other ----
def _pair(tmp_path, timeout=30.):
    return [Ranks(r, 2, tmp_path/'meet', timeout=timeout) for r in (0, 1)]


def test_ranks_wait_for_each_other_stage_by_stage(tmp_path):
    (tmp_path/'meet').mkdir()
    a, b = _pair(tmp_path)
    order = []
    def later():
        order.append('b starts')
        b.wait('one')
        b.wait('two')
    t = threading.Thread(target=later)
    with a.watch():
        t.start()
        a.wait('one')
        order.append('a passed one')
        a.wait('two')
    t.join()
    assert order == ['b starts', 'a passed one']
    assert sorted(p.name for p in (tmp_path/'meet').glob('0*')) == ['001-one.rank0', '001-one.rank1', '002-two.rank0',
                                                                    '002-two.rank1']
    with pytest.raises(ValueError, match='several ranks need a folder to meet in'):
        Ranks(1, 2)


def test_a_failed_rank_stops_the_others_with_its_error(tmp_path):
    (tmp_path/'meet').mkdir()
    a, b = _pair(tmp_path)
    with pytest.raises(ValueError, match='bad clip'):
        with b.watch():
            raise ValueError('bad clip in fold 3')
    with pytest.raises(RankFailed, match=r"(?s)rank 1 of 2 failed, so rank 0 stops:.*ValueError: bad clip in fold 3"):
        a.check()
    with pytest.raises(RankFailed, match='rank 1 of 2 failed'):
        with a.watch():
            a.wait('jobs done')
    assert not (tmp_path/'meet'/'failed.rank0').exists()  # a rank stopped by another's failure does not claim one


def test_a_silent_rank_is_given_up_after_the_timeout(tmp_path):
    (tmp_path/'meet').mkdir()
    a, _ = _pair(tmp_path, timeout=.5)
    with pytest.raises(RankFailed, match=r"rank 1 of 2 has not answered for 0 s while rank 0 waits for it at 'report'"):
        a.wait('report')


def test_dist_timeout_from_the_environment(monkeypatch):
    monkeypatch.setenv('FASTNORM_DIST_TIMEOUT', '7.5')
    assert Ranks().timeout == 7.5
    monkeypatch.setenv('FASTNORM_DIST_TIMEOUT', 'soon')
    with pytest.raises(ValueError, match=r"\$FASTNORM_DIST_TIMEOUT must be a positive number of seconds, not 'soon'"):
        Ranks()


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
    assert 'rank one fails on purpose' in r.stderr and 'rank 1 of 2 failed, so rank 0 stops' in r.stderr
    assert pd.read_csv(tmp_path/'o'/'results.rank1.csv')[['norm', 'run']].values.tolist() == [['global', 0]]
    kept = pd.read_csv(tmp_path/'o'/'results.rank0.csv')[['norm', 'run']].values.tolist()
    assert kept in ([['none', 0]], [['none', 0], ['none', 1]])
    r = _compare(tiny_esc50, tmp_path/'o', *args, '--resume', nproc=2, driver=driver)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f'resuming: {1 + len(kept)} run(s) already' in r.stdout + r.stderr
    assert _rows(tmp_path/'o').equals(_rows(single, norm=['none', 'global']))
