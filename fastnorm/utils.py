"Small helpers shared by the modules: fastnorm's home folder, atomic file writes, disk space reserved before a write."
from __future__ import annotations
import errno, os, re, shutil, socket, tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ['fastnorm_home', 'atomic_path', 'atomic_dir', 'remove_stale', 'reserve', 'no_space', 'explain_full_disk',
           'SPACE_MARGIN']

SPACE_MARGIN = 16 << 20  # where the disk cannot reserve space, this much must stay free beyond what is needed

def fastnorm_home()->Path:
    "Where fastnorm keeps generated data and caches: `$FASTNORM_HOME`, else (unset or empty) `~/.fastnorm`"
    return Path(os.environ.get('FASTNORM_HOME') or '~/.fastnorm').expanduser()  # empty is not the working folder

def _umask()->int:
    m = os.umask(0)  # the only way to read the umask is to set it: put it back at once
    os.umask(m)
    return m

# a temporary name carries the host and process that made it: `.NAME.tmp-HOST-PID-RANDOM`; a later writer in the same
# folder removes those of processes of this host that are gone (killed), and leaves a live one's (a concurrent writer);
# `.NAME.tmp-PID-RANDOM`, without the host, counts as this host's
_TMP = re.compile(r'^\..+\.tmp-(?:(?P<host>[^-/]*)-)?(?P<pid>\d+)-[^/]*$')

def _host()->str: return re.sub(r'[^A-Za-z0-9_.]', '_', socket.gethostname())[:64]

def _tmp_prefix(name:str)->str: return f'.{name}.tmp-{_host()}-{os.getpid()}-'

def _alive(pid:int)->bool:
    "Whether process `pid` of this host runs (a process of another user counts as running)"
    if pid == os.getpid(): return True
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    except (PermissionError, OverflowError, OSError): return True
    return True

def remove_stale(folder)->list:
    """Remove the temporary files and folders (`atomic_dir`, `atomic_path`) in `folder` that processes of this host left
    when they were killed; those of a running process stay. Returns what was removed"""
    gone, host = [], _host()
    try: entries = list(os.scandir(folder))
    except OSError: return gone
    for e in entries:
        m = _TMP.match(e.name)
        if m is None or m['host'] not in (None, host) or _alive(int(m['pid'])): continue
        try:
            if e.is_dir(follow_symlinks=False): shutil.rmtree(e.path)
            else: os.remove(e.path)
            gone.append(e.path)
        except FileNotFoundError: pass  # another process removed it first
    return gone

@contextmanager
def atomic_dir(dest):
    """Yield a temporary folder beside `dest`; on success it replaces `dest` whole: readers never see a half-made
    folder, and a process killed at any point leaves `dest` as it was (or gone, when killed while replacing it) and a
    temporary folder that the next writer beside it removes"""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(dest.parent)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=_tmp_prefix(dest.name)))
    old = []
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result gets the usual permissions
        for _ in range(5):  # another process may put its own `dest` there in between: it is moved aside in turn
            if dest.exists():
                old.append(Path(tempfile.mkdtemp(dir=dest.parent, prefix=_tmp_prefix(dest.name))))
                try: dest.rename(old[-1]/'old')  # moved aside whole, never half-deleted in place
                except FileNotFoundError: pass
            try:
                tmp.rename(dest)
                break
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST): raise
        else: raise FileExistsError(f"{dest}: other processes keep replacing it; try again")
    finally:
        for p in [tmp, *old]:
            if p.exists(): shutil.rmtree(p, ignore_errors=True)

@contextmanager
def atomic_path(path, suffix:str|None=None):
    "Yield a temporary path beside `path`; on success it is renamed onto `path`: readers never see a half-written file"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path.name), suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp): os.remove(tmp)

def _mib(n:int)->str: return f"{n / 2**20:.1f} MiB ({n} bytes)"

def no_space(path, # the file that could not be written
             needed:int, # bytes it needs
             free:int|None=None, # bytes free there; default: asked of the disk now
             name=None, # how the message names `path` (e.g. where a temporary file goes once complete)
            )->OSError:
    "An `OSError` (ENOSPC) that says how much `path` needs, where, and how much is free"
    path = Path(path)
    if free is None: free = shutil.disk_usage(path.parent if path.parent.exists() else '.').free
    name = Path(name or path)
    return OSError(errno.ENOSPC, f"No space left on device for {name}: it needs {_mib(needed)}, and the disk holding "
                                 f"{name.parent} has {_mib(free)} free. Free some space, or choose another folder "
                                 "(FASTNORM_HOME for the feature cache, --out for a comparison or an export)")

def reserve(path, # an existing file, e.g. a `.npy` that `np.lib.format.open_memmap` made (sparse)
            size:int|None=None, # bytes to reserve from its start; default: its length
            margin:int=SPACE_MARGIN, # without `posix_fallocate`: bytes that must stay free beyond `size`
            name=None, # how an error names `path`; default: `path`
           )->Path:
    """Give `path` its `size` bytes on disk now, so writing them later through a memmap cannot find the disk full (the
    kernel would kill the process with SIGBUS). `os.posix_fallocate` where the system and filesystem have it, else a
    check that the disk has `size` + `margin` bytes free; too little space is `no_space`'s `OSError`"""
    path = Path(path)
    size = path.stat().st_size if size is None else int(size)
    if size == 0: return path
    fd = os.open(path, os.O_RDWR)
    try:
        if hasattr(os, 'posix_fallocate'):
            try:
                os.posix_fallocate(fd, 0, size)
                return path
            except OSError as e:
                if e.errno == errno.ENOSPC: raise no_space(path, size, name=name) from None
                if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL): raise
        free = shutil.disk_usage(path.parent).free
        have = os.fstat(fd).st_blocks * 512  # what the file holds on disk already
        if free + have < size + margin: raise no_space(path, size + margin, free, name)
        return path
    finally: os.close(fd)

@contextmanager
def explain_full_disk(path, # the file (or folder) being written
                      needed:int, # about how many bytes the writing needs
                     ):
    "Turn a bare `OSError` ENOSPC raised inside into `no_space`'s, which says how much was needed and is free"
    try: yield
    except OSError as e:
        if e.errno != errno.ENOSPC or 'needs' in str(e): raise
        raise no_space(path, needed) from e
