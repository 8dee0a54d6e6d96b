"""Argument checks shared by fastnorm's modules: each raises a `ValueError` that names the argument, quotes the value
given and says what is allowed, and returns the value in its canonical type. Internal helpers, not in `fastnorm.all`."""
from __future__ import annotations
import functools, math, os, sys, warnings
from numbers import Real

__all__ = ['check_frac', 'check_int', 'check_positive', 'check_range', 'check_choice', 'check_mask_value',
           'check_batch4d', 'check_number', 'empty_cells', 'whole_numbers']

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

def check_between(name:str, # the argument's name, for the message
                  v, # a real number, or a tensor of them
                  lo:float=0., # the smallest value allowed
                  hi:float=math.inf, # the largest value allowed
                 ):
    "`v` (a number, as a float, or a tensor, as it is) with every value finite and in [lo, hi]: NaN is rejected"
    if hasattr(v, 'detach'):
        ok = bool(((v >= lo) & (v <= hi) & v.isfinite()).all())
        shown = f"{v.detach().flatten()[:4].tolist()}{'...' if v.numel() > 4 else ''}"
    else:
        ok = _finite_within(v, lo, hi)
        shown = repr(v)
    if not ok:
        allowed = 'be non-negative' if (lo, hi) == (0, math.inf) else f"lie in [{lo:g}, {hi:g}]"
        raise ValueError(f"`{name}` must {allowed} ({shown} given)")
    return v if hasattr(v, 'detach') else float(v)

# frames of fastnorm and of the transform machinery it builds on: skipped to find the line of the user's call
_INTERNAL = (os.path.dirname(os.path.abspath(__file__)) + os.sep, '<frozen importlib')
_WARNED = set()

def _user_frame():
    "The innermost frame outside fastnorm, fasttransform and fastcore, and its `stacklevel` for `warn_deprecated`"
    libs = tuple(os.path.dirname(sys.modules[m].__file__) + os.sep for m in ('fasttransform', 'fastcore')
                 if m in sys.modules)
    f, level = sys._getframe(2), 2
    while f.f_back is not None and f.f_code.co_filename.startswith(_INTERNAL + libs):
        f, level = f.f_back, level + 1
    return f, level

def warn_deprecated(old:str, # the old spelling, as the message shows it
                    new:str, # what to use instead
                   ):
    "A `DeprecationWarning` that `old` is deprecated, once per line of the user's code that uses it"
    f, level = _user_frame()
    key = (old, f.f_code.co_filename, f.f_lineno)
    if key in _WARNED: return
    _WARNED.add(key)
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=level)

def renamed_kwargs(**renames): # old keyword name = new keyword name
    "Decorator: old keyword names of a function still work, each with a `DeprecationWarning` (`warn_deprecated`)"
    def deco(f):
        @functools.wraps(f)
        def _f(*args, **kwargs):
            for old, new in renames.items():
                if old not in kwargs: continue
                if new in kwargs: raise TypeError(f"{f.__qualname__}() got `{new}` and its old name `{old}`")
                warn_deprecated(f"`{f.__qualname__.removesuffix('.__init__')}({old}=...)`", f"`{new}=`")
                kwargs[new] = kwargs.pop(old)
            return f(*args, **kwargs)
        return _f
    return deco

def renamed_names(module:str, # the module's `__name__`
                  **renames): # old name = new name, both of `module`
    "A module `__getattr__` under which each old name gives its new name's object, with a `DeprecationWarning`"
    def __getattr__(name):
        if name not in renames: raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_deprecated(f"`{module}.{name}`", f"`{renames[name]}`")
        return getattr(sys.modules[module], renames[name])
    return __getattr__

def _finite_within(v, lo:float, hi:float, lo_open:bool=False, hi_open:bool=False)->bool:
    "Whether `v` is a finite real number from `lo` to `hi` (an open end excluded): the test under the bound checks"
    return (_is_number(v) and math.isfinite(v) and (v > lo if lo_open else v >= lo)
            and (v < hi if hi_open else v <= hi))

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
    if not _finite_within(v, lo, hi, lo_open, hi_open):
        raise ValueError(f"`{name}` must be a finite number{_interval(lo, hi, lo_open, hi_open)} ({v!r} given)")
    return float(v)

# ---- cells of a table fastnorm reads (esc50.csv, results.csv, curves.csv): a pandas Series in, masks out ----

def empty_cells(v):
    "Cells of the Series `v` that are empty: NaN (an empty cell as pandas reads it) or only spaces"
    return v.isna() | (v.astype(str).str.strip() == '')

def whole_numbers(v, # a pandas Series of cells
                  lo:int|None=None, # the smallest allowed
                  below:float=2**62, # every value's magnitude must be below this (int64 and float precision)
                 )->tuple:
    "`(numbers, ok)`: the cells of `v` as numbers (NaN where not one) and where they are whole, >= `lo` and < `below`"
    import pandas as pd
    num = pd.to_numeric(v, errors='coerce')
    ok = num.notna() & (num == num.round()) & (num.abs() < below)
    if lo is not None: ok &= num >= lo
    return num, ok
