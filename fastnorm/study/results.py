"""The comparison's tables in `--out`: `results.csv` (a row per trained job) and `curves.csv` (a row per epoch), read
back on resume, written atomically after every job (a rank of several writes its own rows to `NAME.rankK.csv`), and
merged by the rank that finds every job saved."""
from __future__ import annotations
from pathlib import Path
import numpy as np, pandas as pd
from ..tables import empty_cells, whole_numbers
from ..utils import atomic_path, explain_full_disk
from .ranks import Ranks, part_files

__all__ = ['Ledger', 'canonical', 'read_table', 'write_csv']

def write_csv(df:pd.DataFrame, path:Path):
    "`df` to `path` atomically: an interrupted write (or a full disk) leaves the old file"
    text = df.to_csv(index=False)
    with explain_full_disk(path, len(text.encode())), atomic_path(path) as tmp:
        tmp.write_text(text)

KEY = ['norm', 'run', 'fold']  # a job's columns: a row of results.csv per job, of curves.csv per job and epoch
NEEDED = {'results': KEY + ['final_acc'], 'curves': KEY + ['epoch', 'accuracy']}  # what resume and the report read

def _read_csv(p:Path)->pd.DataFrame:
    """A table fastnorm wrote, read back: refused, naming the file and the first bad row (1-based, the header is row 1),
    when pandas cannot read it, a column resume needs is missing, a job's cell is empty or not an integer run/fold,
    or an accuracy is not a number in [0, 1]"""
    try: df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{p} is not a table fastnorm wrote ({type(e).__name__}: {e}): repair or remove it, "
                         "or choose another --out") from None
    if not isinstance(df.index, pd.RangeIndex):  # pandas makes the first cells an index when rows outnumber the header
        raise ValueError(f"{p}: its rows have more cells than its header's {len(df.columns)} columns: repair or remove "
                         "it, or choose another --out")
    if not len(df): return df
    name = p.name.split('.')[0]
    need = [c for c in NEEDED.get(name, KEY) if c not in df and not (c == 'fold' and 'run' in df)]
    if need: raise ValueError(f"{p} lacks column(s) {need} that --resume reads (it has {list(df.columns)})")
    def bad(mask, what):
        if mask.any():
            raise ValueError(f"{p}: {what} in row {int(mask.to_numpy().argmax()) + 2}: repair or remove that row, "
                             "or choose another --out")
    bad(empty_cells(df['norm']), "column 'norm' is empty")
    for c in ('run', 'fold', 'epoch'):
        if c not in df: continue
        v, ok = whole_numbers(df[c], lo=0, below=2**53)
        if not ok.all():
            v0 = df[c][~ok].iloc[0]
            bad(~ok, f"column {c!r} must hold integers >= 0, not {v0.item() if hasattr(v0, 'item') else v0!r}")
        df[c] = v.astype('int64')
    for c in ('final_acc', 'accuracy'):
        if c not in df: continue
        v = pd.to_numeric(df[c], errors='coerce')
        bad(~((v >= 0) & (v <= 1)), f"column {c!r} must be an accuracy in [0, 1]")
        df[c] = v.astype(float)
    df['norm'] = df['norm'].astype(str)
    return df

def _read_nonempty(paths)->list:
    "The tables in `paths` that exist and hold rows"
    dfs = [_read_csv(p) for p in paths if p.exists() and p.stat().st_size > 0]
    return [d for d in dfs if len(d)]

def _with_fold(df:pd.DataFrame, fold:int)->pd.DataFrame:
    "`df` with a `fold` column after `run`: a table of fastnorm 0.2 (one split, no such column) gets `fold`"
    if 'fold' not in df and len(df):
        df.insert(df.columns.get_loc('run') + 1, 'fold', fold)
    return df

def _newest_first(paths:list)->list:
    return sorted((p for p in paths if p.exists()), key=lambda p: p.stat().st_mtime_ns, reverse=True)

def read_table(out:Path, name:str, fold:int=1)->pd.DataFrame:
    """`out/name.csv` with the rows ranks saved in `name.rank*.csv`; where several files hold a job, the newest file's
    row wins (a rank's part holds what it evaluated since). A table without a `fold` column (fastnorm 0.2's) holds
    fold `fold`'s rows"""
    paths = _newest_first([out/f'{name}.csv'] + part_files(out, name))
    dfs = [_with_fold(d, fold) for d in _read_nonempty(paths)]
    if not dfs:
        return pd.DataFrame()
    df = pd.concat(dfs, ignore_index=True)
    keys = KEY + (['epoch'] if 'epoch' in df else [])
    return df.drop_duplicates(keys, keep='first').reset_index(drop=True)

def canonical(df:pd.DataFrame, norms)->pd.DataFrame:
    "Rows by run, then fold, then in the order of `--norms` (the same order whatever process trained them)"
    if not len(df):
        return df
    pos = {n: i for i, n in enumerate(norms)}
    fold = df['fold'] if 'fold' in df else pd.Series(0, index=df.index)
    order = pd.DataFrame(dict(run=df['run'].astype(int).to_numpy(), fold=fold.astype(int).to_numpy(),
                              norm=df['norm'].map(lambda n: pos.get(n, len(pos))).to_numpy()))
    return df.iloc[order.sort_values(['run', 'fold', 'norm'], kind='stable').index].reset_index(drop=True)

def _curves(frames:list)->pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

def _of(df:pd.DataFrame, jobs)->pd.DataFrame:
    "The rows of `df` whose job `(norm, run, fold)` is in `jobs`"
    return df[[k in jobs for k in zip(*(df[c] for c in KEY))]]

def _key(row:dict)->tuple:
    return tuple(row[k] for k in KEY)

class Ledger:
    """The rows of one comparison: those found in `out` on resume, and those this process adds. Rows are dicts by job
    `(norm, run, fold)`; `columns` keeps the order the results' columns first appeared in"""
    def __init__(self, out:Path, norms, cols:list, ranks:Ranks, resume:bool,
                 fold:int=1, # the fold of rows saved without a `fold` column (a single-split comparison's)
                ):
        "Read what `out` holds (on `resume`), with a NaN in every column of `cols` a row lacks"
        self.out, self.norms, self.ranks, self.fold = out, tuple(norms), ranks, fold
        old = read_table(out, 'results', fold) if resume else pd.DataFrame()
        self.columns = list(old.columns) + [c for c in cols if len(old) and c not in old]
        self.rows = {_key(r): {**{c: np.nan for c in self.columns}, **r} for r in old.to_dict('records')}
        curves = read_table(out, 'curves', fold) if resume else pd.DataFrame()
        if len(curves):  # a job counts once it is in results.csv: drop curves of a job cut between the two writes
            curves = _of(curves, self.rows)
        self.curves = [curves] if len(curves) else []
        self.mine, self.mine_curves = {}, []  # what this process trains or updates: a rank's part
        if resume and ranks.world > 1:  # the rows its rank number left in an earlier launch stay in its part
            for d in _read_nonempty([ranks.part(out, 'results')]):
                self.mine.update({k: self.rows[k] for k in zip(*(_with_fold(d, fold)[c] for c in KEY))})
            self.mine_curves = [_of(curves, self.mine)] if len(curves) and self.mine else []
    @property
    def done(self)->set:
        "The jobs that have a row"
        return set(self.rows)
    def missing(self, job, shifts)->list:
        "Those of `shifts` job `(norm, run, fold)`'s row has no accuracy for"
        return [sh for sh in shifts if pd.isna(self.rows[job].get(sh.column, np.nan))]
    def add(self, row:dict, curve:pd.DataFrame):
        "A trained job's results row and curve"
        self.columns += [c for c in row if c not in self.columns]
        self.rows[_key(row)] = self.mine[_key(row)] = row
        self.curves.append(curve)
        self.mine_curves.append(curve)
    def update(self, job, values:dict):
        "New columns (accuracies under new shifts) of the row of `job` `(norm, run, fold)`"
        self.rows[job].update(values)
        self.mine[job] = self.rows[job]
    def _results(self, rows:dict)->pd.DataFrame:
        return pd.DataFrame(list(rows.values()), columns=self.columns) if rows else pd.DataFrame()
    def save(self):
        "After every job: everything to curves.csv, then results.csv; a rank of several writes only its own rows"
        own = self.ranks.world > 1
        write_csv(_curves(self.mine_curves if own else self.curves), self.ranks.part(self.out, 'curves'))
        results = self._results(self.mine) if own else canonical(self._results(self.rows), self.norms)
        write_csv(results, self.ranks.part(self.out, 'results'))  # results last: a job counts once both are saved
    def merge(self)->tuple:
        """(results, curves) of the whole comparison; among several ranks (read once every job is saved), written to
        the tables, and the parts they merge removed"""
        results, curves = canonical(self._results(self.rows), self.norms), _curves(self.curves)
        if self.ranks.world > 1:
            write_csv(curves, self.out/'curves.csv')
            write_csv(results, self.out/'results.csv')
            for p in part_files(self.out, 'results') + part_files(self.out, 'curves'):
                p.unlink()
        return results, curves
    def own_rows(self)->pd.DataFrame:
        "The rows this process trained or updated"
        return self._results(self.mine)
