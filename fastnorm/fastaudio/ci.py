"fastaudio's `skip_if_ci`: run a notebook's long step everywhere but on CI."
import os
from functools import wraps

__all__ = ['skip_if_ci']

def _empty(): return None

def skip_if_ci(func):
    "Decorate a no-argument function: when `CI=true` it runs `alt_func` (default: nothing) instead"
    @wraps(func)
    def _inner(alt_func=_empty):
        if os.environ.get('CI') == 'true': return alt_func()
        return func()
    return _inner
