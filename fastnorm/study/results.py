"""The comparison's tables in `--out`: `results.csv` (a row per trained job) and `curves.csv` (a row per epoch), read
back on resume, written atomically after every job (a distributed rank writes its own rows to `NAME.rankK.csv`), and
merged by rank 0 at the end."""
from __future__ import annotations
from pathlib import Path
import numpy as np, pandas as pd
from ..utils import atomic_path
from .ranks import Ranks, part_files

__all__ = ['Ledger', 'canonical', 'read_table', 'write_csv']

def write_csv(df:pd.DataFrame, path:Path):
    "`df` to `path` atomically: an interrupted write leaves the old file"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)

def _read_nonempty(paths)->list:
    "The tables in `paths` that exist and hold rows"
    dfs = [pd.read_csv(p) for p in paths if p.exists() and p.stat().st_size > 0]
    return [d for d in dfs if len(d)]

def read_table(out:Path, name:str)->pd.DataFrame:
    """`out/name.csv` with the rows the ranks of an earlier distributed run left in `name.rank*.csv`; where both hold a
    job, the first wins"""
    dfs = _read_nonempty([out/f'{name}.csv'] + part_files(out, name))
    if not dfs:
        return pd.DataFrame()
    df = pd.concat(dfs, ignore_index=True)
    keys = ['norm', 'run'] + (['epoch'] if 'epoch' in df else [])
    return df.drop_duplicates(keys, keep='first').reset_index(drop=True)

def canonical(df:pd.DataFrame, norms)->pd.DataFrame:
    "Rows by run, then in the order of `--norms` (the same order whatever process trained them)"
    if not len(df):
        return df
    pos = {n: i for i, n in enumerate(norms)}
    key = df['run'].astype(int) * (len(pos) + 1) + df['norm'].map(lambda n: pos.get(n, len(pos)))
    return df.iloc[np.argsort(key.to_numpy(), kind='stable')].reset_index(drop=True)

def _curves(frames:list)->pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

class Ledger:
    """The rows of one comparison: those found in `out` on resume, and those this process adds. Rows are dicts by job
    `(norm, run)`; `columns` keeps the order the results' columns first appeared in"""
    def __init__(self, out:Path, norms, cols:list, ranks:Ranks, resume:bool):
        "Read what `out` holds (on `resume`), with a NaN in every column of `cols` a row lacks"
        self.out, self.norms, self.ranks = out, tuple(norms), ranks
        old = read_table(out, 'results') if resume else pd.DataFrame()
        self.columns = list(old.columns) + [c for c in cols if len(old) and c not in old]
        self.rows = {(r['norm'], r['run']): {**{c: np.nan for c in self.columns}, **r} for r in old.to_dict('records')}
        curves = read_table(out, 'curves') if resume else pd.DataFrame()
        if len(curves):  # a job counts once it is in results.csv: drop curves of a job cut between the two writes
            curves = curves[[k in self.rows for k in zip(curves['norm'], curves['run'])]]
        self.curves = [curves] if len(curves) else []
        self.mine, self.mine_curves = {}, []  # what this process trains or updates: a rank's part
    @property
    def done(self)->set:
        "The jobs that have a row"
        return set(self.rows)
    def missing(self, job, shifts)->list:
        "Those of `shifts` job `(norm, run)`'s row has no accuracy for"
        return [sh for sh in shifts if pd.isna(self.rows[job].get(sh.column, np.nan))]
    def add(self, row:dict, curve:pd.DataFrame):
        "A trained job's results row and curve"
        self.columns += [c for c in row if c not in self.columns]
        self.rows[row['norm'], row['run']] = self.mine[row['norm'], row['run']] = row
        self.curves.append(curve)
        self.mine_curves.append(curve)
    def update(self, job, values:dict):
        "New columns (accuracies under new shifts) of the row of `job` `(norm, run)`"
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
        """On rank 0, once all ranks are done: (results, curves) of the whole comparison, the parts merged into the
        tables (a part's rows replace the old ones they update) and removed"""
        results, curves = self._results(self.rows), _curves(self.curves)
        if self.ranks.world == 1:
            return canonical(results, self.norms), curves
        parts = _read_nonempty(part_files(self.out, 'results'))
        if parts:
            results = pd.concat(parts[::-1] + [results], ignore_index=True)
            results = results.drop_duplicates(['norm', 'run'], keep='first')
        curves = pd.concat([curves] + _read_nonempty(part_files(self.out, 'curves')), ignore_index=True)
        curves = curves.drop_duplicates(['norm', 'run', 'epoch'])
        write_csv(curves, self.out/'curves.csv')
        write_csv(canonical(results, self.norms), self.out/'results.csv')
        for p in part_files(self.out, 'results') + part_files(self.out, 'curves'):
            p.unlink()
        return canonical(results, self.norms), curves
    def own_rows(self)->pd.DataFrame:
        "The rows this process trained or updated"
        return self._results(self.mine)
