"""The distribution: its name on the package index is `fastnorm-audio` (`fastnorm` there is an unrelated project), and
no text in the repository installs the bare name; the wheel holds every file fastnorm reads at run time.
(.ci/wheel builds the wheel and the sdist, runs `twine check` on both and runs `fastnorm` from the wheel alone.)"""
import importlib.util
import json
import re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
DIST = 'fastnorm-audio'

# an install command (`pip install`, `pip3 install`, `uv pip install`, `pipx install`, `uv add`, `poetry add`) up to
# the end of its shell command (`&&`, `||`, `;`, `|`, a closing parenthesis), a comment (`#`) or the line
_INSTALL = re.compile(r"\b(?:(?:pip3?|pipx)\s+install|uv\s+add|poetry\s+add)\b([^\n&;|)#]*)")
# the bare name as a requirement: a word of its own (after a space or a quote; not `fastnorm-audio`,
# `.venv/bin/fastnorm`, `fastnorm.all`), alone or with extras, a version or a closing quote
_BARE = re.compile(r"(?:^|(?<=[\s'\"`]))fastnorm(?=$|[\s\['\"`=<>~!,;@]|\.(?!\w))")
# an extra of the bare name anywhere, as in "the fastnorm[deploy] extra"
_BARE_EXTRA = re.compile(r"(?:^|(?<=[\s'\"`(]))fastnorm\[")

def bare_installs(lines)->list:
    "The (where, line) pairs among `lines` (such pairs) that install the bare name `fastnorm` or name one of its extras"
    found = []
    for where, line in lines:
        args = [m[1] for m in _INSTALL.finditer(line)]
        if any(_BARE.search(a) for a in args) or _BARE_EXTRA.search(line):
            found.append((where, line.strip()))
    return found

def located_lines(path:Path)->list:
    "A file's (where, line) pairs: where is the line number, for a notebook 'cell C line L'"
    text = path.read_text(encoding='utf-8')
    if path.suffix != '.ipynb': return [(str(i), l) for i, l in enumerate(text.splitlines(), 1)]
    cells = json.loads(text)['cells']
    return [(f"cell {c} line {i}", l) for c, cell in enumerate(cells, 1)
            for i, l in enumerate(''.join(cell['source']).splitlines(), 1)]

def bare_install_report(paths)->list:
    "'file:where: line' for each line of `paths` that installs the bare name"
    return [f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}:{where}: {line}"
            for p in paths for where, line in bare_installs(located_lines(p))]

_TEXTS = ['README.md', 'CHANGELOG.md', 'CONTRIBUTING.md', 'BENCHMARKS.md', 'pyproject.toml', 'settings.ini',
          'mkdocs.yml', 'MANIFEST.in', '.ci/*', 'docs/**/*.md', 'nbs/*.ipynb', 'fastnorm/**/*.py', 'bench/**/*.py',
          'examples/**/*.py', 'tools/**/*.py', 'tests/**/*.py']

def repo_texts()->list:
    "The repository's text files a user reads or runs (this test file excepted: it holds the bad lines it plants)"
    files = sorted({p for g in _TEXTS for p in ROOT.glob(g) if p.is_file()} - {Path(__file__).resolve()})
    return [p for p in files if '__pycache__' not in p.parts]

def test_the_scan_covers_the_texts_a_user_reads_or_runs():
    names = {str(p.relative_to(ROOT)) for p in repo_texts()}
    assert {'README.md', 'CHANGELOG.md', '.ci/run', 'pyproject.toml', 'fastnorm/deploy.py', 'fastnorm/study/run.py',
            'nbs/11_deploy.ipynb', 'examples/serve_onnx.py', 'bench/deploy.py', 'tests/test_deploy.py'} <= names

@pytest.mark.parametrize('path', repo_texts(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_text_installs_the_other_projects_name(path):
    assert bare_install_report([path]) == []


@pytest.mark.parametrize('line', [
    'pip install fastnorm', 'pip install "fastnorm[deploy]"', "!pip install -q 'fastnorm[deploy]'",
    'python -m pip install --dry-run fastnorm  # or: pip install -e .', '| what `pip install fastnorm` resolves to |',
    'pip install numpy fastnorm==0.3.0', 'uv pip install fastnorm>=0.3', 'uv add fastnorm',
    'raise ImportError("install the fastnorm[deploy] extra")', 'cd x && pip3 install -U fastnorm && fastnorm --help'])
def test_a_planted_bare_install_is_reported_with_its_file_and_line(tmp_path, line):
    f = tmp_path/'notes.md'
    f.write_text(f"# notes\n\n{line}\n")
    assert bare_install_report([f]) == [f"{f}:3: {line.strip()}"]

@pytest.mark.parametrize('line', [
    'pip install fastnorm-audio', 'pip install "fastnorm-audio[deploy]"', 'pip install -e ".[test]"',
    '.venv/bin/pip install -e . && .venv/bin/fastnorm compare --out runs/compare',
    'pip install dist/fastnorm_audio-0.3.0-py3-none-any.whl',
    'pip install fastnorm_audio', 'import fastnorm.all  # after pip install fastnorm-audio', 'fastnorm compare --help',
    'The unrelated `fastnorm` on the package index is not this project.',
    'pip install "fastnorm-audio[deploy]"  # `fastnorm deploy`', 'pip install fastnorm-audio  # then: import fastnorm',
    'assert not re.search(r\'pip install "?fastnorm(\\[|\\s|$)\', text)'])
def test_the_new_name_a_clone_and_the_command_are_not_reported(tmp_path, line):
    f = tmp_path/'notes.md'
    f.write_text(f"{line}\n")
    assert bare_install_report([f]) == []

def test_a_notebook_cell_is_scanned(tmp_path):
    nb = dict(cells=[dict(cell_type='markdown', source=['# Deploy\n']),
                     dict(cell_type='code', source=['import fastnorm\n', "%pip install 'fastnorm[deploy]'\n"])],
              metadata={}, nbformat=4, nbformat_minor=5)
    f = tmp_path/'nb.ipynb'
    f.write_text(json.dumps(nb))
    assert bare_install_report([f]) == [f"{f}:cell 2 line 2: %pip install 'fastnorm[deploy]'"]


def test_the_deploy_hint_installs_the_distribution_name(monkeypatch, tmp_path):
    from fastnorm.deploy import to_onnx
    find_spec = importlib.util.find_spec
    missing = ('onnx', 'onnxscript', 'onnxruntime')
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name in missing else find_spec(name, *a))
    hint = r"to_onnx needs onnx, onnxscript, onnxruntime: pip install 'fastnorm-audio\[deploy\]' \(onnx, onnxscript"
    with pytest.raises(ImportError, match=hint):
        to_onnx(None, tmp_path/'model.onnx')
    assert not (tmp_path/'model.onnx').exists()


def test_the_distribution_is_fastnorm_audio_and_the_command_fastnorm():
    tomllib = pytest.importorskip('tomllib')
    meta = tomllib.loads((ROOT/'pyproject.toml').read_text())
    assert meta['project']['name'] == DIST
    assert meta['project']['scripts'] == {'fastnorm': 'fastnorm.cli:main'}
    assert meta['tool']['setuptools']['packages']['find']['include'] == ['fastnorm*']

def test_the_wheel_holds_what_fastnorm_reads_at_run_time():
    """Every folder of Python files under fastnorm/ is a package (setuptools ships it), and there are no data files that
    the wheel would leave out (a file fastnorm reads from its own folder would need `package-data`)"""
    pkg = ROOT/'fastnorm'
    folders = {p.parent for p in pkg.rglob('*.py') if '__pycache__' not in p.parts}
    assert {pkg/'study', pkg/'avmnist', pkg/'fastaudio'/'core'} <= folders
    assert [f for f in folders if not (f/'__init__.py').exists()] == []
    assert [p for p in pkg.rglob('*') if p.is_file() and p.suffix not in ('.py', '.pyc')] == []
