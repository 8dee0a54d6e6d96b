"""Argument checks shared by fastnorm's modules: each raises a `ValueError` that names the argument, quotes the value
given and says what is allowed, and returns the value in its canonical type. Internal helpers, not in `fastnorm.all`."""
from __future__ import annotations
import math
from numbers import Real

__all__ = ['check_frac', 'check_int', 'check_positive', 'check_range', 'check_choice', 'check_mask_value',
           'check_batch4d', 'check_number']

def _is_number(v)->bool:
    "A real number that is not a bool"
    return isinstance(v, Real) and not isinstance(v, bool)

def check_frac(name:str, # the argument's name, for the message
               v, # its value
               lo_open:bool=False, # exclude 0
              )->float:
    "`v` as a float in [0, 1] (or (0, 1] with `lo_open`)"
    if not _is_number(v) or not ((0 < v) if lo_open else (0 <= v)) or v > 1:
        raise ValueError(f"`{name}` must be between 0 and 1 ({v!r} given)")
    return float(v)

def check_int(name:str, # the argument's name, for the message
              v, # its value: an int, or a whole number
              lo:int=0, # the smallest value allowed
             )->int:
    "`v` as an int >= `lo`"
    if not _is_number(v) or not math.isfinite(v) or v != int(v) or v < lo:  # int() of NaN or inf would raise
        raise ValueError(f"`{name}` must be an integer >= {lo} ({v!r} given)")
    return int(v)

def check_positive(name:str, # the argument's name, for the message
                   v, # its value
                  )->float:
    "`v` as a finite float > 0"
    if not _is_number(v) or not math.isfinite(v) or not v > 0:
        raise ValueError(f"`{name}` must be a positive number ({v!r} given)")
    return float(v)

def check_range(name:str, # the argument's name, for the message
                v, # a number (a fixed value) or a `(low, high)` pair
                lo:float=-math.inf, # the smallest value allowed
                hi:float=math.inf, # the largest value allowed
               )->tuple[float,float]:
    "A number or a `(low, high)` pair inside [lo, hi], as a float pair"
    pair = (v, v) if _is_number(v) else v
    ok = (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_number(a) for a in pair)
          and all(math.isfinite(a) and lo <= a <= hi for a in pair) and pair[0] <= pair[1])
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
    if not _is_number(v) or not math.isfinite(v):
        raise ValueError(f"`mask_value` must be a finite number or 'mean' ({v!r} given)")
    return float(v)

def check_batch4d(x, # the tensor given
                  who:str, # the transform or function, for the message
                  hint:str='add a batch dimension with `x[None]`', # how to fix it
                 ):
    "Fail unless `x` is a batch `[B,C,F,T]`"
    if x.ndim != 4: raise ValueError(f"{who} expects a batch `[B,C,F,T]` (shape {list(x.shape)} given): {hint}")

def _interval(lo:float, hi:float, lo_open:bool, hi_open:bool)->str:
    "How a message says the interval from `lo` to `hi`: ' in [0, 1)', ' >= 0', ' < 0' or '' (any finite number)"
    if math.isinf(lo) and math.isinf(hi): return ''
    if math.isinf(hi): return f" {'>' if lo_open else '>='} {lo:g}"
    if math.isinf(lo): return f" {'<' if hi_open else '<='} {hi:g}"
    return f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

def check_number(name:str, # the argument's name, for the message
                 v, # its value
                 lo:float=-math.inf, # the smallest value allowed
                 hi:float=math.inf, # the largest value allowed
                 lo_open:bool=False, # exclude `lo` itself
                 hi_open:bool=False, # exclude `hi` itself
                )->float:
    "`v` as a finite float between `lo` and `hi` (NaN and infinities never pass)"
    ok = _is_number(v) and math.isfinite(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok: raise ValueError(f"`{name}` must be a finite number{_interval(lo, hi, lo_open, hi_open)} ({v!r} given)")
    return float(v)
