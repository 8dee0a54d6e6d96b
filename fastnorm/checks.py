"""Argument checks shared by fastnorm's modules: each raises a `ValueError` that names the argument, quotes the value
given and says what is allowed, and returns the value in its canonical type. Internal helpers, not in `fastnorm.all`.

Numbers have one check, `check_number` (finite, within bounds, whole if asked); `check_int`, `check_positive` and
`check_frac` are its three most common bounds, by name."""
from __future__ import annotations
import math
from numbers import Real

__all__ = ['check_number', 'check_int', 'check_positive', 'check_frac', 'check_range', 'check_choice',
           'check_mask_value', 'check_batch4d', 'check_dims']

def _is_number(v)->bool:
    "A real number that is not a bool"
    return isinstance(v, Real) and not isinstance(v, bool)

def _within(v, lo:float, hi:float, lo_open:bool, hi_open:bool, integer:bool)->bool:
    "Whether `v` (a real number, or a tensor: every value) is finite, from `lo` to `hi` (an open end excluded), whole"
    if hasattr(v, 'detach'):
        ok = v.isfinite() & ((v > lo) if lo_open else (v >= lo)) & ((v < hi) if hi_open else (v <= hi))
        return bool((ok & (v == v.round()) if integer else ok).all())
    return (_is_number(v) and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
            and (not integer or v == int(v)))

def _allowed(lo:float, hi:float, lo_open:bool, hi_open:bool, integer:bool)->str:
    "What a message says is allowed: 'an integer >= 1', 'a positive number', 'a finite number in [0, 1)', ..."
    if not integer and (lo, lo_open, hi) == (0, True, math.inf): return 'a positive number'
    what = 'an integer' if integer else 'a finite number'
    if math.isinf(lo) and math.isinf(hi): return what
    if math.isinf(hi): return f"{what} {'>' if lo_open else '>='} {lo:g}"
    if math.isinf(lo): return f"{what} {'<' if hi_open else '<='} {hi:g}"
    return f"{what} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

def _shown(v)->str:
    "`v` as a message quotes it: its repr, or a tensor's first values"
    if not hasattr(v, 'detach'): return repr(v)
    return f"{v.detach().flatten()[:4].tolist()}{'...' if v.numel() > 4 else ''}"

def check_number(name:str, # the argument's name, for the message
                 v, # its value: a real number (not a bool), or a tensor of them
                 lo:float=-math.inf, # the smallest value allowed
                 hi:float=math.inf, # the largest value allowed
                 lo_open:bool=False, # exclude `lo` itself
                 hi_open:bool=False, # exclude `hi` itself
                 integer:bool=False, # require a whole number (3.0 passes, as 3)
                ):
    """`v` if it is finite (NaN and infinities never pass), between `lo` and `hi` and, with `integer`, whole: a number
    comes back as a float (an int with `integer`), a tensor as it is (every value checked)"""
    if not _within(v, lo, hi, lo_open, hi_open, integer):
        raise ValueError(f"`{name}` must be {_allowed(lo, hi, lo_open, hi_open, integer)} ({_shown(v)} given)")
    if hasattr(v, 'detach'): return v
    return int(v) if integer else float(v)

def check_int(name:str, # the argument's name, for the message
              v, # its value: an int, or a whole number
              lo:int=0, # the smallest value allowed
             )->int:
    "`v` as an int >= `lo` (`check_number` with `integer`)"
    return check_number(name, v, lo=lo, integer=True)

def check_positive(name:str, # the argument's name, for the message
                   v, # its value
                  )->float:
    "`v` as a finite float > 0 (`check_number` in (0, inf))"
    return check_number(name, v, lo=0, lo_open=True)

def check_frac(name:str, # the argument's name, for the message
               v, # its value
               lo_open:bool=False, # exclude 0
              )->float:
    "`v` as a float in [0, 1] (or (0, 1] with `lo_open`) (`check_number` in [0, 1])"
    return check_number(name, v, lo=0, hi=1, lo_open=lo_open)

def check_range(name:str, # the argument's name, for the message
                v, # a number (a fixed value) or a `(low, high)` pair
                lo:float=-math.inf, # the smallest value allowed
                hi:float=math.inf, # the largest value allowed
               )->tuple[float,float]:
    "A number or a `(low, high)` pair inside [lo, hi], as a float pair"
    pair = (v, v) if _is_number(v) else v
    ok = (isinstance(pair, (tuple, list)) and len(pair) == 2
          and all(_within(a, lo, hi, False, False, False) for a in pair) and pair[0] <= pair[1])
    if not ok:
        raise ValueError(f"`{name}` must be a number or a (low, high) pair with {lo} <= low <= high <= {hi} "
                         f"({v!r} given)")
    return float(pair[0]), float(pair[1])

def check_choice(name:str, # the argument's name, for the message
                 v, # its value
                 choices:tuple, # the values allowed
                ):
    "`v`, which must be one of `choices`"
    if v not in choices: raise ValueError(f"`{name}` must be one of {choices} ({v!r} given)")
    return v

def check_mask_value(v)->float|str:
    "A mask's fill value: a finite number (as a float) or 'mean'"
    if isinstance(v, str) and v == 'mean': return v
    if not _within(v, -math.inf, math.inf, False, False, False):
        raise ValueError(f"`mask_value` must be a finite number or 'mean' ({v!r} given)")
    return float(v)

def check_batch4d(x, # the tensor given
                  who:str, # the transform or function, for the message
                  hint:str='add a batch dimension with `x[None]`', # how to fix it
                 ):
    "Fail unless `x` is a batch `[B,C,F,T]`"
    if x.ndim != 4: raise ValueError(f"{who} expects a batch `[B,C,F,T]` (shape {list(x.shape)} given): {hint}")

def check_dims(name:str, # the argument's name, for the message
               v, # an int or a sequence of ints
               ndim:int|None=None, # the rank they index: each must lie in [-ndim, ndim)
               distinct:bool=True, # reject a dim given twice
              )->tuple:
    "`v` as a non-empty tuple of integer dims"
    dims = (v,) if isinstance(v, int) and not isinstance(v, bool) else v
    ok = isinstance(dims, (tuple, list, range)) and len(dims) > 0
    ok = ok and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)
    if ok and ndim is not None: ok = all(-ndim <= d < ndim for d in dims)
    if ok and distinct: ok = len({d if ndim is None else d % ndim for d in dims}) == len(dims)
    if not ok:
        what = 'distinct integer dims' if distinct else 'integer dims'
        of = '' if ndim is None else f" of a rank-{ndim} tensor"
        raise ValueError(f"`{name}` must be {what}{of}, at least one ({v!r} given)")
    return tuple(dims)
