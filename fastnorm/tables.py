"""Checks of the cells of the tables fastnorm reads (ESC-50's `esc50.csv` in `fastnorm.data`, the comparison's
`results.csv` and `curves.csv` in `fastnorm.study.results`): a pandas Series in, masks out, so each reader names the
rows and the file in its own message."""
from __future__ import annotations

__all__ = ['empty_cells', 'whole_numbers']

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
