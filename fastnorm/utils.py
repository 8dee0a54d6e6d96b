"Small helpers shared by the modules: fastnorm's home folder and atomic file writes."
from __future__ import annotations
import os, tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ['fastnorm_home', 'atomic_path']

def fastnorm_home()->Path:
    "Where fastnorm keeps generated data and caches: `$FASTNORM_HOME`, else `~/.fastnorm`"
    return Path(os.environ.get('FASTNORM_HOME', '~/.fastnorm')).expanduser()

@contextmanager
def atomic_path(path, suffix:str|None=None):
    "Yield a temporary path beside `path`; on success it is renamed onto `path`, so readers never see a half-written file"
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=suffix if suffix is not None else path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp): os.remove(tmp)
