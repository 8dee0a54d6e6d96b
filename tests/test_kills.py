"""Killed runs: a cache build, a comparison and an export killed with SIGKILL at random points leave nothing that makes
the next run fail or read a half-written file; temporary folders of dead processes are removed by the next writer, a
live one's are not; several processes building one cache at once all get it."""
import os, random, shutil, signal, socket, subprocess, sys, tempfile, textwrap, time, numpy as np, pandas as pd, pytest
from pathlib import Path
from fastnorm.utils import atomic_dir, atomic_path, remove_stale
from fastnorm.cache import SpecCache
from conftest import ROOT

# ---- stale temporary folders: removed when their process is gone, kept while it runs

def _dead_pid()->int:
    p = subprocess.Popen([sys.executable, '-c', 'pass'])
    p.wait()  # reaped: the pid names no process now (a zombie would still count as running)
    return p.pid

def _tmp_of(pid:int, folder, name:str, is_dir=True):
    "A temporary name beside `folder/name` as this process's `atomic_dir` makes one, of process `pid`"
    probe = Path(tempfile.mkdtemp())
    with atomic_dir(probe/name) as t: made = t.name  # `.NAME.tmp-HOST-PID-RANDOM`
    shutil.rmtree(probe)
    host_part = made.rsplit('-', 1)[0].removesuffix(f'-{os.getpid()}')  # `.NAME.tmp-HOST`
    assert host_part.startswith(f'.{name}.tmp-') and '-' not in host_part.removeprefix(f'.{name}.tmp-')
    f = folder/f"{host_part}-{pid}-x1"
    f.mkdir() if is_dir else f.write_bytes(b'half')
    return f

def test_stale_temporary_folders_of_dead_processes_are_removed(tmp_path):
    dead, live = _dead_pid(), subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        gone = [_tmp_of(dead, tmp_path, 'KEY'), _tmp_of(dead, tmp_path, 'results.csv', is_dir=False)]
        kept = [_tmp_of(live.pid, tmp_path, 'KEY'), _tmp_of(os.getpid(), tmp_path, 'other')]
        other_host = tmp_path/f'.KEY.tmp-elsewhere-{dead}-x1'  # another machine's, on a shared disk: not ours to judge
        other_host.mkdir()
        plain = tmp_path/'.KEY.tmp-abc'  # an older fastnorm's name, without its process
        plain.mkdir()
        gone.append(tmp_path/f'.KEY.tmp-{dead}-x2')  # a process's name without its host: this host's
        gone[-1].mkdir()
        with atomic_dir(tmp_path/'KEY') as t: (t/'a').write_text('x')
        assert not any(p.exists() for p in gone) and all(p.exists() for p in kept) and other_host.exists()
        assert plain.exists() and (tmp_path/'KEY'/'a').read_text() == 'x'
        live.kill(); live.wait()
        with atomic_path(tmp_path/'results.csv') as t: t.write_text('y')
        assert not kept[0].exists() and kept[1].exists()  # this process runs: its own names stay
        assert remove_stale(tmp_path) == []
    finally:
        if live.poll() is None: live.kill(); live.wait()

def test_replacing_a_folder_never_leaves_it_half_deleted(tmp_path):
    with atomic_dir(tmp_path/'d') as t: (t/'a').write_text('1')
    with atomic_dir(tmp_path/'d') as t: (t/'b').write_text('2')
    assert sorted(p.name for p in (tmp_path/'d').iterdir()) == ['b'] and sorted(os.listdir(tmp_path)) == ['d']

# ---- SIGKILL at random points

def _env(home):
    return {**os.environ, 'FASTNORM_HOME': str(home), 'PYTHONPATH': str(ROOT), 'PYTHONWARNINGS': 'ignore'}

def _run(code:str, home, kill_after:float|None=None, timeout=600)->tuple:
    """Run `code` (it prints 'ready' once imported, then works): to its end -> (rc, stdout, seconds of work), or
    SIGKILLed `kill_after` seconds after 'ready' -> (None, stdout, None)"""
    p = subprocess.Popen([sys.executable, '-u', '-c', textwrap.dedent(code)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=_env(home), cwd=ROOT)
    line = p.stdout.readline()
    assert line.strip() == 'ready', (line, p.stderr.read()[-3000:] if p.poll() is not None else '')
    t0 = time.monotonic()
    if kill_after is not None:
        try: p.wait(kill_after)
        except subprocess.TimeoutExpired: pass
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stdout.close(); p.stderr.close()
            return None, '', None
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    return p.returncode, out, time.monotonic() - t0

def _temps(folder)->list:
    return [str(p) for p in folder.rglob('*') if '.tmp-' in p.name] if folder.exists() else []

def _kill_points(seed:int, seconds:float, n:int=3)->list:
    "`n` moments in the work of a run that takes `seconds`, drawn from `seed`: one in each n-th of it"
    rng = random.Random(seed)
    return [seconds * (k + rng.random()) / n for k in range(n)]

CACHE = """
    import sys
    from fastnorm.cache import SpecCache
    from fastnorm.spec import spec_config
    from fastnorm.data import read_esc50_csv
    files = read_esc50_csv({data!r})['path']
    print('ready', flush=True)
    c = SpecCache.build(files, spec_config('quick', sr=8000), 6.0, dest={dest!r}, bs=2, progress=False)
    print('built', c.path, flush=True)
"""

@pytest.mark.slow
def test_a_cache_build_killed_at_random_points(tiny_esc50, tmp_path):
    ref = tmp_path/'ref'
    _, _, secs = _run(CACHE.format(data=str(tiny_esc50), dest=str(ref/'c')), ref)
    want = np.load(ref/'c'/'data.npy')
    home = tmp_path/'home'
    for i, t in enumerate(_kill_points(20, secs)):
        _run(CACHE.format(data=str(tiny_esc50), dest=str(home/'c')), home, kill_after=t)
        if (home/'c').exists(): SpecCache(home/'c').check()  # there whole, or not at all
        _run(CACHE.format(data=str(tiny_esc50), dest=str(home/'c')), home)  # the next run builds (or reuses) it
        assert np.array_equal(np.load(home/'c'/'data.npy'), want) and _temps(home) == [], (i, t)

EXPORT = """
    from fastnorm.avmnist.export import export_dataset
    print('ready', flush=True)
    export_dataset({out!r}, data={data!r}, scheme='burst_noise', size='48x48', bs=4, progress=False, device='cpu',
                   resume=True)
    print('exported', flush=True)
"""

@pytest.mark.slow
def test_an_export_killed_at_random_points(tiny_esc50, tmp_path):
    _, _, secs = _run(EXPORT.format(out=str(tmp_path/'ref'), data=str(tiny_esc50)), tmp_path)
    want = (tmp_path/'ref'/'data.npy').read_bytes()
    for i, t in enumerate(_kill_points(30, secs)):
        out = tmp_path/f'x{i}'
        _run(EXPORT.format(out=str(out), data=str(tiny_esc50)), tmp_path, kill_after=t)
        part = out.with_name(out.name + '.partial')
        for m in (part/'manifest').glob('*.json') if part.exists() else []: pd.read_json(m, typ='series')  # whole
        _run(EXPORT.format(out=str(out), data=str(tiny_esc50)), tmp_path)
        assert (out/'data.npy').read_bytes() == want and not part.exists() and _temps(out) == [], (i, t)

COMPARE = """
    from fastnorm.study.config import CompareConfig
    from fastnorm.study.run import run_comparison
    cfg = CompareConfig(data={data!r}, norms=('none', 'global'), runs=2, epochs=1, bs=8, shifts=('gain:-6',))
    print('ready', flush=True)
    run_comparison(cfg, out={out!r}, resume=True, progress=False, log=lambda *a: None)
    print('compared', flush=True)
"""

@pytest.mark.slow
def test_a_comparison_killed_at_random_points(tiny_esc50, tmp_path):
    home = tmp_path/'home'
    _, _, secs = _run(COMPARE.format(data=str(tiny_esc50), out=str(tmp_path/'ref')), home)
    want = pd.read_csv(tmp_path/'ref'/'results.csv')[['norm', 'run', 'fold']]
    from fastnorm.study.results import read_table
    for i, t in enumerate(_kill_points(40, secs)):
        out = tmp_path/f'c{i}'
        if i == 0: shutil.rmtree(home/'cache')  # the first kill lands in the cache build, the others in training
        _run(COMPARE.format(data=str(tiny_esc50), out=str(out)), home, kill_after=t)
        if out.exists(): read_table(out, 'results'), read_table(out, 'curves')  # whole files, or none
        _run(COMPARE.format(data=str(tiny_esc50), out=str(out)), home)
        got = pd.read_csv(out/'results.csv')
        assert got[['norm', 'run', 'fold']].equals(want) and got['final_acc'].between(0, 1).all(), (i, t)
        assert (out/'summary.md').is_file() and _temps(out) == [] and _temps(home) == [], (i, t)

BUILDERS = """
    from fastnorm.data import esc50_dls
    print('ready', flush=True)
    dls = esc50_dls({data!r}, bs=4, sr=8000, duration=3.0, cache=True, progress=False, num_workers=0)
    print('items', len(dls.train_ds) + len(dls.valid_ds), flush=True)
"""

@pytest.mark.slow
def test_several_processes_build_one_cache_at_once(tiny_esc50, tmp_path):
    procs = [subprocess.Popen([sys.executable, '-u', '-c', textwrap.dedent(BUILDERS.format(data=str(tiny_esc50)))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=ROOT)
             for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 and 'items 40' in o for p, (o, e) in zip(procs, outs)), [e[-2000:] for _, e in outs]
    (c,) = list((tmp_path/'cache').iterdir())  # one cache, no temporary folder left
    assert len(SpecCache(c).check()) == 40
