"""Execute every notebook in `nbs/` at the small scale set in settings.ini, so the documentation stays runnable, and
check that each saved notebook shows the outputs of its current code at the scale it documents (made by
`python tools/run_nbs.py`; the tests never save over it)"""
import base64
import copy
import io
import json
import os
import sys
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
pytest.importorskip('nbclient')

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import run_nbs  # noqa: E402  (tools/run_nbs.py: how a notebook runs, shared by the tests and the docs command)

code, markdown = nbformat.v4.new_code_cell, nbformat.v4.new_markdown_cell


def injected(nb):
    return [c for c in nb.cells if run_nbs.INJECTED_TAG in c.metadata.get('tags', [])]


def test_settings_are_read():
    s = run_nbs.nb_settings()
    assert s['nbs_path'] == ROOT/'nbs'
    assert 'notest' in s['tst_flags']
    assert any(p.startswith('epochs=') for p in s['tst_params'])


def test_settings_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='notebook settings not found'):
        run_nbs.nb_settings(tmp_path/'settings.ini')


def test_params_injected_after_params_cell_and_flagged_cells_skipped():
    nb = nbformat.v4.new_notebook(cells=[code('#| params\nepochs = 10'), code('#| notest\nraise SystemExit'),
                                         markdown('#| notest is only a flag in code'), code('x = epochs'), code('  ')])
    s = dict(tst_flags=['notest'], tst_params=['epochs=1'])
    run_nbs.with_params(nb, s)
    sources = [c.source for c in run_nbs.executed_cells(nb, s)]
    assert sources[0] == '#| params\nepochs = 10' and sources[2] == 'x = epochs' and len(sources) == 3
    assert sources[1].startswith('# Injected by tools/run_nbs.py') and sources[1].endswith('\nepochs=1')
    run_nbs.with_params(nb, dict(s, tst_params=['epochs=2', 'runs=1']))    # a rerun replaces the injected cell
    assert len(injected(nb)) == 1 and nb.cells[1] is injected(nb)[0]
    assert injected(nb)[0].source.endswith('\nepochs=2\nruns=1') and injected(nb)[0].id == 'injected-parameters'


@pytest.mark.slow
def test_execute_records_what_ran_and_stale_sees_every_change(tmp_path):
    "One real run of a tiny notebook: outputs, stable paths, capped DPI; then each edit that must make it stale"
    nb = nbformat.v4.new_notebook(cells=[
        code('#| params\nn = 10'),
        code('import os, pathlib\nprint(pathlib.Path.cwd())\nprint(os.environ["FASTNORM_HOME"] + "/data")'),
        code('#| notest\nraise SystemExit("flagged cells must not run")'),
        code('import matplotlib.pyplot as plt\nplt.figure(figsize=(4, 2))\nplt.plot(range(n))\nplt.show()')])
    s = dict(tst_flags=['notest'], tst_params=['n = 3'])
    nb = run_nbs.execute(nb, s, cwd=tmp_path/'work', home=tmp_path/'home')
    assert [c.execution_count for c in nb.cells] == [1, 2, 3, None, 4]
    assert nb.cells[2].outputs[0].text == '.\n~/.fastnorm/data\n'
    assert nb.cells[3].outputs == []
    assert str(tmp_path) not in json.dumps(nb)
    from PIL import Image
    png = next(o.data['image/png'] for o in nb.cells[4].outputs if 'image/png' in o.get('data', {}))
    assert Image.open(io.BytesIO(base64.b64decode(png))).size[0] <= 4 * run_nbs.DPI
    record = nb.metadata[run_nbs.RECORD_KEY]
    assert record['tst_params'] == ['n = 3'] and len(record['executed_sha256']) == 64
    assert run_nbs.stale(nb, s) == []

    edited = copy.deepcopy(nb)
    edited.cells[4].source += '  # edited'
    assert run_nbs.stale(edited, s) == ['its code or the settings changed since it was executed']
    assert run_nbs.stale(nb, dict(s, tst_params=['n = 4'])) == [
        'its code or the settings changed since it was executed',
        "its injected-parameters cell is not the one the settings give"]
    assert run_nbs.stale(nb, dict(s, tst_flags=[])) == [     # the flagged cell would run now, and it has no output
        'its code or the settings changed since it was executed',
        'its cells were not all run once top to bottom (execution counts [1, 2, 3, None, 4])']
    unrun = copy.deepcopy(nb)
    unrun.cells[4].execution_count = None
    assert run_nbs.stale(unrun, s) == [
        'its cells were not all run once top to bottom (execution counts [1, 2, 3, None])']
    unrecorded = copy.deepcopy(nb)
    del unrecorded.metadata[run_nbs.RECORD_KEY]
    assert run_nbs.stale(unrecorded, s) == ['it was never executed by tools/run_nbs.py (no record in its metadata)']


@pytest.mark.slow
def test_docs_scale_runs_the_notebooks_own_parameters_and_every_cell(tmp_path):
    "What is saved for the docs: no injected cell, flagged cells run; a test-scale run is stale for the docs"
    nb = nbformat.v4.new_notebook(cells=[code('#| params\nn = 10'), code('#| notest\nflagged = 1'),
                                         code('print(n, flagged)')])
    s = dict(tst_flags=['notest'], tst_params=['n = 3'])
    docs = run_nbs.execute(copy.deepcopy(nb), s, cwd=tmp_path/'docs', scale='docs')
    assert injected(docs) == [] and [c.execution_count for c in docs.cells] == [1, 2, 3]
    assert docs.cells[2].outputs[0].text == '10 1\n'
    assert docs.metadata[run_nbs.RECORD_KEY]['scale'] == 'docs'
    assert run_nbs.stale(docs, s) == [] and run_nbs.stale(docs, s, scale='docs') == []
    assert run_nbs.stale(docs, dict(s, tst_params=['n = 4'])) == []     # the tests' scale does not touch the docs
    edited = copy.deepcopy(docs)
    edited.cells[1].source += '  # edited'                                # a flagged cell is part of the docs' code
    assert run_nbs.stale(edited, s) == ['its code or the settings changed since it was executed']
    nb.cells[1].source = '#| notest\nflagged = 2'
    tst = run_nbs.execute(copy.deepcopy(nb), dict(s, tst_flags=[]), cwd=tmp_path/'tst')
    assert injected(tst)[0].source.endswith('\nn = 3') and tst.cells[3].outputs[0].text == '3 2\n'
    assert run_nbs.stale(tst, dict(s, tst_flags=[]), scale='docs') == ["its outputs were made at the 'tst' scale, not at 'docs'"]
    with pytest.raises(ValueError, match="scale must be one of docs, tst, not 'big'"):
        run_nbs.execute(nb, s, scale='big')


def test_records_from_before_scales_read_as_the_test_scale():
    nb = nbformat.v4.new_notebook(cells=[code('x = 1')])
    s = dict(tst_flags=[], tst_params=[])
    nb.cells[0].execution_count = 1
    nb.metadata[run_nbs.RECORD_KEY] = dict(executed_sha256=run_nbs.code_hash(nb.cells), tst_params=[], tst_flags=[])
    assert run_nbs.stale(nb, s) == []
    assert run_nbs.stale(nb, s, scale='docs') == ["its outputs were made at the 'tst' scale, not at 'docs'"]


@pytest.mark.slow
def test_failing_cell_stops_the_run(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[code('raise ValueError("broken notebook")')])
    with pytest.raises(Exception, match='broken notebook'):
        run_nbs.execute(nb, dict(tst_flags=[], tst_params=[]), cwd=tmp_path)


@pytest.mark.parametrize('path', run_nbs.notebooks(), ids=lambda p: p.name)
def test_saved_notebook_shows_outputs_of_its_code(path):
    """The saved notebook was executed by tools/run_nbs.py from its current code at the scale it documents; a copy with
    one cell edited is stale"""
    s = run_nbs.nb_settings()
    nb = nbformat.read(path, as_version=4)
    assert run_nbs.stale(nb, s, scale='docs') == [], \
        f'run `python tools/run_nbs.py {path.relative_to(ROOT)}` and commit the notebook'
    assert injected(nb) == []
    edited = copy.deepcopy(nb)
    cell = run_nbs.executed_cells(edited, s, 'docs')[-1]
    cell.source += '\nNone'
    assert run_nbs.stale(edited, s) == ['its code or the settings changed since it was executed']


@pytest.mark.slow
@pytest.mark.parametrize('path', run_nbs.notebooks(), ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    "Each notebook runs top to bottom at the small scale, as tools/run_nbs.py runs it for the docs"
    s = run_nbs.nb_settings()
    home = os.environ.get('FASTNORM_HOME')    # the test session's (conftest.py): the notebooks share its datasets
    nb = run_nbs.execute(nbformat.read(path, as_version=4), s, cwd=tmp_path, home=home)
    assert run_nbs.stale(nb, s) == []
