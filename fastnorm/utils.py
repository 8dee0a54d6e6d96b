"Small helpers shared by the modules: fastnorm's home folder and atomic file writes."
from __future__ import annotations
import os, shutil, tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ['fastnorm_home', 'atomic_path', 'atomic_dir']

def fastnorm_home()->Path:
    "Where fastnorm keeps generated data and caches: `$FASTNORM_HOME`, else `~/.fastnorm`"
    return Path(os.environ.get('FASTNORM_HOME', '~/.fastnorm')).expanduser()

def _umask()->int:
    m = os.umask(0)  # the only way to read the umask is to set it: put it back at once
    os.umask(m)
    return m

@contextmanager
def atomic_dir(dest):
    "Yield a temporary folder beside `dest`; on success it replaces `dest` whole: readers never see a half-made folder"
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f'.{dest.name}.tmp-'))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result gets the usual permissions
        if dest.exists(): shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists(): shutil.rmtree(tmp)

@contextmanager
def atomic_path(path, suffix:str|None=None):
    "Yield a temporary path beside `path`; on success it is renamed onto `path`: readers never see a half-written file"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp): os.remove(tmp)
