"""Faults: a full disk is an `OSError` that says what was needed, where and what is free (never a SIGBUS from a memmap),
nothing half-made stays behind, and what was complete stays usable."""
import errno, json, os, re, shutil, subprocess, sys, textwrap, warnings, numpy as np, pytest
import fastnorm.utils as fu
from fastnorm.utils import reserve, no_space
from fastnorm.cache import SpecCache
from fastnorm.spec import spec_config
from fastnorm.data import read_esc50_csv
from conftest import ROOT

def _unsupported(fd, offset, length): raise OSError(errno.EOPNOTSUPP, 'Operation not supported')

def test_reserve_allocates_the_file(tmp_path):
    f = tmp_path/'a.npy'
    np.lib.format.open_memmap(f, mode='w+', dtype=np.float32, shape=(64, 1024)).flush()  # sparse: no blocks yet
    assert os.stat(f).st_blocks * 512 < 64 * 4096
    reserve(f)
    assert os.stat(f).st_blocks * 512 >= 64 * 4096 and os.path.getsize(f) > 64 * 4096  # every byte backed now

def test_without_fallocate_free_space_is_checked_with_a_margin(tmp_path, monkeypatch):
    f = tmp_path/'a.npy'
    np.lib.format.open_memmap(f, mode='w+', dtype=np.float32, shape=(256, 1024)).flush()
    monkeypatch.setattr(os, 'posix_fallocate', _unsupported)
    free = shutil.disk_usage(tmp_path).free
    reserve(f, margin=0)  # a 1 MiB file fits this disk
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(OSError, match=r"No space left on device for .*a\.npy: it needs 17\.0 MiB \(17825920 bytes\), "
                                      r"and the disk holding .* has 1\.0 MiB \(1048576 bytes\) free") as e:
        reserve(f)  # 1 MiB + the 16 MiB margin
    assert e.value.errno == errno.ENOSPC and free > 0

def test_a_cache_that_does_not_fit_leaves_no_folder(tiny_esc50, tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'posix_fallocate', _unsupported)
    monkeypatch.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10 << 20, 9 << 20, 1 << 20))
    files = read_esc50_csv(tiny_esc50)['path']
    with pytest.raises(OSError, match=r"No space left on device for .*data\.npy: it needs .* MiB .* has 1\.0 MiB"):
        SpecCache.build(files, spec_config('quick', sr=8000), 1.0, dest=tmp_path/'c', progress=False)
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone

def test_an_export_that_does_not_fit_leaves_nothing_to_resume(tiny_esc50, tmp_path, monkeypatch):
    from fastnorm.avmnist.export import export_dataset
    kw = dict(data=tiny_esc50, scheme='clean', size='16x16', progress=False, device='cpu')
    with monkeypatch.context() as m:
        m.setattr(os, 'posix_fallocate', _unsupported)
        m.setattr(shutil, 'disk_usage', lambda p: shutil._ntuple_diskusage(10 << 20, 9 << 20, 1 << 10))
        with pytest.raises(OSError, match=r"No space left on device for .*out\.partial/data\.npy: it needs"):
            export_dataset(tmp_path/'out', **kw)
    assert not any(p.name.startswith('.data.npy') for p in (tmp_path/'out.partial').iterdir())
    out = export_dataset(tmp_path/'out', resume=True, **kw)  # with space again: the setup is redone
    assert np.load(out/'data.npy').shape == (40, 16, 16)

def test_a_damaged_cache_is_rebuilt(tiny_esc50, tmp_path):
    files, cfg = read_esc50_csv(tiny_esc50)['path'][:4], spec_config('quick', sr=8000)
    c = SpecCache.build(files, cfg, 1.0, dest=tmp_path/'c', progress=False)
    want = c[files[0]]
    (tmp_path/'c'/'data.npy').write_bytes((tmp_path/'c'/'data.npy').read_bytes()[:300])  # cut short
    with pytest.raises(ValueError, match=r"feature cache file .*data\.npy is damaged: not a \.npy file numpy can map"):
        SpecCache(tmp_path/'c')[files[0]]
    with pytest.warns(UserWarning, match=r"Rebuilding the feature cache in .*c: .*data\.npy is damaged"):
        c = SpecCache.build(files, cfg, 1.0, dest=tmp_path/'c', progress=False)
    assert (c[files[0]] == want).all()

def test_a_file_listed_twice_is_refused_by_the_cache(tiny_esc50, tmp_path):
    files = list(read_esc50_csv(tiny_esc50)['path'][:2])
    with pytest.raises(ValueError, match=r"`files` lists .*\.wav more than once"):
        SpecCache.build(files + files[:1], spec_config('quick', sr=8000), 1.0, dest=tmp_path/'c', progress=False)

# ---- on a real 3 MB filesystem (a tmpfs: needs root)

@pytest.fixture
def small_disk(tmp_path):
    "A 3 MB tmpfs mounted for the test, unmounted after it"
    if os.geteuid() != 0: pytest.skip(f"a small filesystem is a tmpfs mount, which needs root (uid {os.geteuid()})")
    d = tmp_path/'disk'
    d.mkdir()
    r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(d)], capture_output=True, text=True)
    if r.returncode: pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try: yield d
    finally: subprocess.run(['umount', '-l', str(d)], check=False)

def _python(code:str, home, timeout=300):
    env = {**os.environ, 'FASTNORM_HOME': str(home), 'PYTHONPATH': str(ROOT), 'PYTHONWARNINGS': 'ignore'}
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)

BUILD = """
    import sys, fastnorm.cache as fc
    from fastnorm.data import esc50_dls
    if sys.argv[-1:] == ['sparse']: fc.reserve = lambda p, name=None: p  # the writer as it was: a sparse memmap
    dls = esc50_dls({data!r}, bs=4, sr=8000, duration={duration}, cache=True, progress=False, num_workers=0)
    print('built', len(dls.train_ds) + len(dls.valid_ds))
"""

@pytest.mark.slow
def test_a_full_disk_while_caching_is_an_error_and_the_complete_cache_stays(tiny_esc50, small_disk):
    small = _python(BUILD.format(data=str(tiny_esc50), duration=1.0), small_disk)  # 0.3 MB: fits
    assert small.returncode == 0 and 'built 40' in small.stdout, small.stderr
    (done,) = [p for p in (small_disk/'cache').iterdir()]
    # 12 s a clip: 40 x 64 x 376 float32 = 3.7 MB on a 3 MB disk
    big = _python(BUILD.format(data=str(tiny_esc50), duration=12.0), small_disk)
    assert big.returncode == 1, f"rc {big.returncode}: {big.stderr[-2000:]}"  # not 135 / -SIGBUS
    msg = big.stderr.strip().splitlines()[-1]
    assert msg.startswith(f"OSError: [Errno 28] No space left on device for {small_disk/'cache'}/") and \
        '/data.npy: it needs 3.7 MiB (3850368 bytes), and the disk holding ' in msg and '.tmp-' not in msg, msg
    said = int(re.search(r'MiB \((\d+) bytes\) free', msg)[1])
    assert abs(said - shutil.disk_usage(small_disk).free) <= 64 << 10, msg  # what was free (the folder aside)
    assert sorted(p.name for p in (small_disk/'cache').iterdir()) == [done.name]  # no .KEY.tmp-* left
    again = _python(BUILD.format(data=str(tiny_esc50), duration=1.0), small_disk)  # the complete cache is reused
    assert again.returncode == 0 and 'built 40' in again.stdout and SpecCache(done).check()
    # the next run fails the same clear way, not with a bare ENOSPC from a leftover folder
    assert _python(BUILD.format(data=str(tiny_esc50), duration=12.0), small_disk).stderr.strip().splitlines()[-1] == msg
    assert sorted(p.name for p in (small_disk/'cache').iterdir()) == [done.name]

@pytest.mark.slow
def test_the_old_sparse_memmap_dies_of_sigbus_on_a_full_disk(tiny_esc50, small_disk):
    "What the reservation prevents (the issue's `Bus error`): the same build writing into a sparse memmap"
    r = _python(BUILD.format(data=str(tiny_esc50), duration=12.0) + "\n", small_disk)
    assert r.returncode == 1  # reserved: the clear error
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(BUILD.format(data=str(tiny_esc50), duration=12.0)),
                        'sparse'], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, 'FASTNORM_HOME': str(small_disk), 'PYTHONPATH': str(ROOT)})
    assert r.returncode in (-7, 135), (r.returncode, r.stderr[-1000:])  # SIGBUS

EXPORT = """
    import sys
    from fastnorm.avmnist.export import export_dataset
    stop = lambda first, end: (_ for _ in ()).throw(KeyboardInterrupt) if sys.argv[-1:] == ['stop'] and first else None
    try: export_dataset({out!r}, data={data!r}, scheme='clean', size={size!r}, format='db', bs=8, progress=False,
                        device='cpu', resume=True, on_batch=stop)
    except KeyboardInterrupt: print('stopped')
    else: print('exported')
"""

@pytest.mark.slow
def test_a_full_disk_while_exporting_keeps_the_batches_written(tiny_esc50, small_disk, tmp_path):
    ref = _python(EXPORT.format(out=str(tmp_path/'ref'), data=str(tiny_esc50), size='64x64'), tmp_path)
    assert 'exported' in ref.stdout, ref.stderr
    big = _python(EXPORT.format(out=str(small_disk/'big'), data=str(tiny_esc50), size='160x160'), small_disk)
    msg = big.stderr.strip().splitlines()[-1]  # 40 x 160 x 160 float32 = 3.9 MB
    assert big.returncode == 1 and 'No space left on device for ' in msg and 'it needs 3.9 MiB' in msg, big.stderr
    assert not [p for p in (small_disk/'big.partial').rglob('*') if p.name.startswith('.')]
    # 40 x 64 x 64 float32 = 0.6 MB: stopped after its first batch, then the disk is filled
    code = EXPORT.format(out=str(small_disk/'x'), data=str(tiny_esc50), size='64x64')
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(code), 'stop'], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, 'PYTHONPATH': str(ROOT), 'FASTNORM_HOME': str(small_disk)})
    assert 'stopped' in r.stdout, r.stderr
    shutil.rmtree(small_disk/'big.partial')
    fill = small_disk/'fill'
    fd = os.open(fill, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b'\0' * 4096): pass
    except OSError as e: assert e.errno == errno.ENOSPC
    finally: os.close(fd)
    full = _python(code, small_disk)
    assert full.returncode == 1 and 'No space left on device for ' in full.stderr.strip().splitlines()[-1], full.stderr
    assert len(list((small_disk/'x.partial'/'manifest').glob('*.json'))) >= 1  # the batches written stay
    fill.unlink()
    done = _python(code, small_disk)
    assert 'exported' in done.stdout, done.stderr
    assert np.array_equal(np.load(small_disk/'x'/'data.npy'), np.load(tmp_path/'ref'/'data.npy'))
