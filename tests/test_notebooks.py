"Execute every notebook in `nbs/` at the small scale set in settings.ini, so the documentation stays runnable"
import configparser
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')

ROOT = Path(__file__).resolve().parents[1]

def nb_settings(path=ROOT/'settings.ini'):
    "The notebook settings in nbdev's keys: `nbs_path`, `recursive`, `tst_flags`, `tst_params`"
    cfg = configparser.ConfigParser(); cfg.read(path)
    d = cfg['DEFAULT']
    return dict(nbs_path=ROOT/d.get('nbs_path', 'nbs'), recursive=d.getboolean('recursive', False),
                tst_flags=d.get('tst_flags', '').split(),
                tst_params=[l.strip() for l in d.get('tst_params', '').splitlines() if l.strip()])

def notebooks(s=None):
    s = s or nb_settings()
    pat = '**/*.ipynb' if s['recursive'] else '*.ipynb'
    return sorted(p for p in s['nbs_path'].glob(pat) if '.ipynb_checkpoints' not in p.parts)

def prepare(nb, s):
    "Drop cells flagged with one of `tst_flags`; insert the `tst_params` overrides after the `#| params` cell"
    def flags(c): 
        first = c.source.lstrip().splitlines()[0] if c.source.strip() else ''
        return first[3:].split() if first.startswith('#|') else []
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code' and set(flags(c)) & set(s['tst_flags']): continue
        cells.append(c)
        if c.cell_type == 'code' and 'params' in flags(c):
            cells.append(nbformat.v4.new_code_cell('\n'.join(s['tst_params'])))
    nb.cells = cells
    return nb

def test_settings_are_read():
    s = nb_settings()
    assert s['nbs_path'] == ROOT/'nbs' and 'notest' in s['tst_flags'] and any(p.startswith('epochs=') for p in s['tst_params'])

def test_prepare_skips_flagged_cells_and_injects_params():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('#| params\nepochs = 10'),
                                        nbformat.v4.new_code_cell('#| notest\nraise SystemExit'),
                                        nbformat.v4.new_code_cell('x = epochs')])
    out = prepare(nb, dict(tst_flags=['notest'], tst_params=['epochs=1']))
    assert [c.source for c in out.cells] == ['#| params\nepochs = 10', 'epochs=1', 'x = epochs']

@pytest.mark.parametrize('path', notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    s = nb_settings()
    nb = prepare(nbformat.read(path, as_version=4), s)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}})
    client.execute()
