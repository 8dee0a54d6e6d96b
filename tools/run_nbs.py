#!/usr/bin/env python
"""Execute the notebooks in `nbs/` at the scale they document and save them with their outputs.

    python tools/run_nbs.py                          # every notebook, at its documented scale (minutes each)
    python tools/run_nbs.py nbs/03_specaugment.ipynb # some of them
    python tools/run_nbs.py --check                  # only say which saved notebooks are stale (exit 1 if any)

Two scales, one place for how a notebook runs, shared with tests/test_notebooks.py (which imports this file):

- `docs` (what is saved): the values of each notebook's `#| params` cell, every cell run, flagged ones included, as
  nbdev's authors do before rendering; the outputs are worth reading (the quick preset on the embedded data);
- `tst` (what the tests run, never saved over the docs): the cells whose first line is `#| <flag>` for a flag in
  `tst_flags` are skipped (they keep no outputs), and the `tst_params` assignments go into a cell inserted right after
  the `#| params` cell, tagged `injected-parameters` (papermill's convention); a rerun replaces it;
- each notebook runs top to bottom in a fresh kernel, in a temporary working folder, with a fresh `$FASTNORM_HOME`,
  the inline matplotlib backend, figures at `DPI` dots per inch and images drawn one block per pixel of data;
- the kernel filters the upstream warnings in `UPSTREAM_WARNINGS` (fastai's own `torch.jit.script`, deprecated in
  torch 2.15), each by its exact message, category and module; every other warning is kept;
- the saved outputs name the temporary folders `.` and `~/.fastnorm`, paths in the repository relative to its root
  and installed packages `site-packages/...`, so a rerun elsewhere gives the same text; PNGs are quantized to 256
  colours when that makes them smaller;
- the notebook's metadata records the scale and a SHA-256 of the code that ran (the sources of the executed cells, the
  injected parameters included), which `stale` compares with the notebook's current code.
"""
import argparse
import base64
import configparser
import copy
import hashlib
import io
import json
import os
import re
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import nbformat

__all__ = ['ROOT', 'DPI', 'RECORD_KEY', 'INJECTED_TAG', 'SCALES', 'UPSTREAM_WARNINGS', 'UPSTREAM_NOISE',
           'nb_settings', 'notebooks', 'cell_flags', 'with_params', 'executed_cells', 'code_hash', 'execute', 'stale',
           'run_notebook', 'quiet', 'main']

ROOT = Path(__file__).resolve().parents[1]
DPI = 72                          # figure resolution of the saved PNGs: keeps the notebooks small
RECORD_KEY = 'fastnorm'           # notebook metadata key holding what was executed
INJECTED_TAG = 'injected-parameters'
SCALES = ('docs', 'tst')          # what the notebooks document (saved) and the tests' small scale (settings.ini)
# warnings filtered in the kernel (PYTHONWARNINGS syntax): upstream noise a reader cannot act on, matched exactly
UPSTREAM_WARNINGS = ('ignore:`torch.jit.script` is deprecated:FutureWarning:torch.jit._script',)  # fastai's own use
# the same warnings as a notebook saved before the filter shows them in its stderr: `quiet` takes them out
UPSTREAM_NOISE = re.compile(r'[^\n]*torch/jit/_script\.py:\d+: FutureWarning: `torch\.jit\.script` is deprecated\.'
                            r'[^\n]*\n(  warnings\.warn\(\n)?')


def nb_settings(path=ROOT/'settings.ini'):
    "The notebook settings in nbdev's keys: `nbs_path`, `recursive`, `tst_flags`, `tst_params`"
    cfg = configparser.ConfigParser()
    if not cfg.read(path):
        raise FileNotFoundError(f"notebook settings not found: {path}")
    d = cfg['DEFAULT']
    params = [line.strip() for line in d.get('tst_params', '').splitlines() if line.strip()]
    return dict(nbs_path=Path(path).parent/d.get('nbs_path', 'nbs'), recursive=d.getboolean('recursive', False),
                tst_flags=d.get('tst_flags', '').split(), tst_params=params)


def notebooks(s=None):
    "The notebooks in `nbs_path`, sorted, without checkpoints"
    s = s or nb_settings()
    pattern = '**/*.ipynb' if s['recursive'] else '*.ipynb'
    return sorted(p for p in Path(s['nbs_path']).glob(pattern) if '.ipynb_checkpoints' not in p.parts)


def cell_flags(cell):
    "The flags of a code cell whose first line is `#| flag ...`, else []"
    lines = cell.source.lstrip().splitlines()
    first = lines[0] if lines else ''
    return first[2:].split() if cell.cell_type == 'code' and first.startswith('#|') else []


def _injected_cell(params):
    source = '\n'.join(['# Injected by tools/run_nbs.py: the small scale of settings.ini',
                        "# (tst_params), at which this notebook's outputs were made", *params])
    cell = nbformat.v4.new_code_cell(source, metadata={'tags': [INJECTED_TAG]})
    cell.id = INJECTED_TAG        # a fixed id, so a rerun does not change it
    return cell


def _injected_sources(nb):
    return [c.source for c in nb.cells if INJECTED_TAG in c.get('metadata', {}).get('tags', [])]


def _check_scale(scale):
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")
    return scale


def with_params(nb, s, scale='tst'):
    """Replace `nb`'s injected-parameters cell (if any) by one holding `s['tst_params']`, after `#| params`, in place;
    at `scale='docs'` only remove it: the `#| params` cell's own values are the documented scale"""
    _check_scale(scale)
    cells = []
    for c in nb.cells:
        if INJECTED_TAG in c.get('metadata', {}).get('tags', []):
            continue
        cells.append(c)
        if scale == 'tst' and 'params' in cell_flags(c) and s['tst_params']:
            cells.append(_injected_cell(s['tst_params']))
    nb.cells = cells
    return nb


def executed_cells(nb, s, scale='tst'):
    "The code cells that run: not blank, and at `scale='tst'` not flagged with one of `s['tst_flags']`"
    skipped = set(s['tst_flags']) if _check_scale(scale) == 'tst' else set()
    def runs(c):
        return c.cell_type == 'code' and c.source.strip() and not set(cell_flags(c)) & skipped
    return [c for c in nb.cells if runs(c)]


def code_hash(cells):
    "SHA-256 of the sources of `cells`, in order"
    return hashlib.sha256(json.dumps([c.source for c in cells]).encode()).hexdigest()


def _scrub(o, subs):
    "`o` (an output, or part of one) with every string's temporary paths replaced by their stable names"
    if isinstance(o, str):
        for old, new in subs:
            o = o.replace(old, new)
        return o
    if isinstance(o, list):
        return [_scrub(v, subs) for v in o]
    if isinstance(o, dict):
        return type(o)((k, _scrub(v, subs)) for k, v in o.items())
    return o


def _path_subs(home, cwd):
    "(path, stable name) pairs for the outputs, longest first: the temporary folders, the repository, site-packages"
    named = {str(home): '~/.fastnorm', str(cwd): '.', str(ROOT) + os.sep: '',
             sysconfig.get_paths()['purelib']: 'site-packages'}
    subs = {}
    for old, new in named.items():
        subs[old] = new
        subs[str(Path(old).resolve()) + (os.sep if old.endswith(os.sep) else '')] = new
    return sorted(subs.items(), key=lambda t: -len(t[0]))


def _small_png(b64):
    "A base64 PNG quantized to 256 colours when that makes it smaller (figures use few colours; spectrograms 256)"
    from PIL import Image
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw))
    buf = io.BytesIO()
    im.quantize(256, method=Image.Quantize.FASTOCTREE).save(buf, 'PNG', optimize=True)
    return base64.b64encode(buf.getvalue()).decode() if buf.tell() < len(raw) else b64


def _tidy(outputs, subs):
    "`outputs` with stable paths and smaller PNGs"
    outputs = _scrub(outputs, subs)
    for o in outputs:
        if 'image/png' in o.get('data', {}):
            o['data']['image/png'] = _small_png(o['data']['image/png'])
    return outputs


def execute(nb, s=None, cwd=None, home=None, timeout=600, scale='tst'):
    """Run `nb` in place at `scale`: 'tst' as the tests do (parameters injected, flagged cells skipped), 'docs' as it
    is saved (its own parameters, every cell); a fresh kernel in `cwd` (default: a temporary folder) with
    `$FASTNORM_HOME` at `home` (default: a new temporary folder).
    Returns `nb` with its outputs and the record of what ran in `nb.metadata['fastnorm']`."""
    import nbclient
    s = s or nb_settings()
    with tempfile.TemporaryDirectory(prefix='fastnorm-nb-') as tmp:
        cwd = Path(cwd or Path(tmp)/'cwd')
        home = Path(home or Path(tmp)/'home')
        cwd.mkdir(parents=True, exist_ok=True)
        rc = Path(tmp)/'matplotlibrc'
        rc.write_text(f'figure.dpi: {DPI}\nimage.interpolation: nearest\n')   # one block per bin: small PNGs
        env = dict(os.environ, FASTNORM_HOME=str(home), MATPLOTLIBRC=str(rc),
                   MPLBACKEND='module://matplotlib_inline.backend_inline',
                   PYTHONWARNINGS=','.join(filter(None, [os.environ.get('PYTHONWARNINGS'), *UPSTREAM_WARNINGS])))
        with_params(nb, s, scale)
        for c in nb.cells:
            if c.cell_type == 'code':
                c.outputs = []
                c.execution_count = None
        cells = executed_cells(nb, s, scale)
        run = nbformat.v4.new_notebook()
        run.cells, run.metadata = cells, nb.metadata   # the same objects, not copies: the outputs land in `nb`
        client = nbclient.NotebookClient(run, timeout=timeout, kernel_name='python3', record_timing=False,
                                         coalesce_streams=True, resources={'metadata': {'path': str(cwd)}})
        client.execute(env=env)
        subs = _path_subs(home=home, cwd=cwd)
        for c in cells:
            c.outputs = _tidy(c.outputs, subs)
    record = dict(scale=scale, executed_sha256=code_hash(cells), runner='tools/run_nbs.py')
    if scale == 'tst':
        record.update(tst_params=s['tst_params'], tst_flags=s['tst_flags'])
    nb.metadata[RECORD_KEY] = record
    return nb


def stale(nb, s=None, scale=None):
    """Why the saved notebook `nb` does not show the outputs of its current code at the scale it was executed at, or
    at `scale` when given ([] if it does). Notebooks recorded before scales existed were made at 'tst'."""
    s = s or nb_settings()
    record = nb.metadata.get(RECORD_KEY, {})
    if 'executed_sha256' not in record:
        return ['it was never executed by tools/run_nbs.py (no record in its metadata)']
    made = record.get('scale', 'tst')
    problems = []
    if scale is not None and _check_scale(scale) != made:
        problems.append(f"its outputs were made at the {made!r} scale, not at {scale!r}")
    expected = with_params(copy.deepcopy(nb), s, made)
    if code_hash(executed_cells(expected, s, made)) != record['executed_sha256']:
        problems.append('its code or the settings changed since it was executed')
    if _injected_sources(nb) != _injected_sources(expected):
        problems.append('its injected-parameters cell is not the one the settings give')
    counts = [c.get('execution_count') for c in executed_cells(nb, s, made)]
    if counts != list(range(1, len(counts) + 1)):
        problems.append(f'its cells were not all run once top to bottom (execution counts {counts})')
    return problems


def quiet(nb):
    """The notebook `nb` (an `nbformat` node or its JSON as a dict) without the `UPSTREAM_NOISE` warnings in its stderr
    outputs, in place; an output left empty is dropped, every other output is kept as it is"""
    for cell in nb.get('cells', []):
        outs = []
        for o in cell.get('outputs', []):
            if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
                text = ''.join(o['text']) if isinstance(o['text'], list) else o['text']
                o['text'] = UPSTREAM_NOISE.sub('', text)
                if not o['text']: continue
            outs.append(o)
        if 'outputs' in cell: cell['outputs'] = outs
    return nb


def run_notebook(path, s=None, timeout=1800, scale='docs'):
    "Execute the notebook at `path` at `scale` and save it with its outputs (atomically: a temporary file, a rename)"
    path = Path(path)
    nb = execute(nbformat.read(path, as_version=4), s, timeout=timeout, scale=scale)
    tmp = path.with_name(f'.{path.name}.tmp')
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return nb


def main(argv=None):
    "Command line: execute and save the notebooks named (default: all), or `--check` them"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('paths', nargs='*', type=Path, help='notebooks to run (default: every notebook in nbs_path)')
    p.add_argument('--check', action='store_true', help='only report the notebooks whose outputs are stale')
    p.add_argument('--timeout', type=int, default=1800, help='seconds allowed for one cell')
    p.add_argument('--scale', choices=SCALES, default='docs',
                   help="'docs': each notebook's own parameters (what is committed); 'tst': the tests' small scale, "
                        "for a quick look (the saved notebook then fails the test that wants the docs' scale)")
    args = p.parse_args(argv)
    s = nb_settings()
    paths = args.paths or notebooks(s)
    bad = 0
    for path in paths:
        if args.check:
            problems = stale(nbformat.read(path, as_version=4), s, scale='docs')
            bad += bool(problems)
            print(f'{path}: ' + ('; '.join(problems) if problems else 'up to date'))
            continue
        start = time.perf_counter()
        run_notebook(path, s, timeout=args.timeout, scale=args.scale)
        print(f'{path}: executed at the {args.scale!r} scale and saved in {time.perf_counter() - start:.0f} s', flush=True)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
