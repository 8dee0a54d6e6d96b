"fastnorm's modules import one way: no cycle, checked statically (imports inside functions too), and each alone"
import ast, subprocess, sys
import pytest
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'fastnorm'

def modules()->dict:
    "Module name -> file, for every module of the package (subpackages too)"
    return {'.'.join(f.relative_to(PKG.parent).with_suffix('').parts): f for f in sorted(PKG.rglob('*.py'))}

def imports(name:str, f:Path, mods:dict)->set:
    "The fastnorm modules that module `name` imports anywhere in its code (package `__init__`s, holding names, aside)"
    pkg = name if f.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = pkg.split('.')
                base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names: found |= {m for m in (f'{base}.{a.name}', base) if m in mods}
        elif isinstance(node, ast.Import): found |= {a.name for a in node.names if a.name in mods}
    return {m for m in found if m != name and not mods[m].name == '__init__.py'}

def find_cycle(graph:dict):
    "A cycle in `graph` (a list of modules), or None"
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1: return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = 2; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c

def test_no_import_cycle_among_modules():
    mods = modules()
    graph = {m: imports(m, f, mods) for m, f in mods.items()}
    assert 'fastnorm.dlstats' in graph['fastnorm.norm'] and 'fastnorm.cache' in graph['fastnorm.dlstats']
    assert not graph['fastnorm.stats'] - {'fastnorm.utils', 'fastnorm.spec', 'fastnorm.checks'}  # no DataLoader, normalizer or cache
    assert find_cycle(graph) is None, ' -> '.join(find_cycle(graph))

def test_find_cycle_finds_one():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set()}) is None

@pytest.mark.slow
def test_each_module_imports_alone():
    "Each module first, in a fresh interpreter: fastnorm's modules are dropped from `sys.modules` between them"
    names = sorted(m for m in modules() if not m.endswith('__main__'))
    code = ("import importlib, sys, traceback\nbad = []\n"
            f"for m in {names!r}:\n"
            "    for k in [k for k in sys.modules if k.split('.')[0] == 'fastnorm']: del sys.modules[k]\n"
            "    try: importlib.import_module(m)\n"
            "    except Exception: bad.append(m + ': ' + traceback.format_exc(limit=-3))\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]

@pytest.mark.slow
def test_star_import_hides_no_fastai_name():
    "`from fastai.vision.all import *` then `from fastnorm.all import *`: every fastai name still means fastai's object"
    code = ("from fastai.vision.all import *\nbefore = dict(globals())\nfrom fastnorm.all import *\n"
            "hidden = sorted(k for k, v in before.items() if not k.startswith('_') and globals()[k] is not v)\n"
            "print(hidden); assert not hidden, hidden\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]

def private_imports(f:Path)->list:
    "Names with a leading underscore that `f` imports from another fastnorm module (dunders such as `__version__` aside)"
    found = []
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').split('.')[0] == 'fastnorm'):
            found += [f'{node.module}.{a.name}' for a in node.names if a.name.startswith('_') and not a.name.endswith('__')]
    return found

def test_no_private_name_imported_across_modules():
    bad = {str(f.relative_to(PKG)): p for f in modules().values() if (p := private_imports(f))}
    assert not bad, bad

def test_no_test_imports_a_private_name():
    "Tests go through public names"
    bad = {f.name: p for f in sorted((PKG.parent/'tests').glob('*.py')) if (p := private_imports(f))}
    assert not bad, bad

def test_private_imports_finds_one(tmp_path):
    (tmp_path/'m.py').write_text("from .augment import span_mask, _check\nfrom . import __version__\n")
    assert private_imports(tmp_path/'m.py') == ['augment._check']

@pytest.mark.slow
def test_fastnorm_works_with_torchaudio_unimportable():
    "torchaudio is optional (cross-checks only): with `import torchaudio` failing, fastnorm imports and makes features"
    code = ("import sys\nsys.modules['torchaudio'] = None  # `import torchaudio` now raises ImportError\n"
            "import torch\nfrom fastnorm.all import *\n"
            "x = AudioTensor(torch.randn(2, 1, 16000), sr=16000)\n"
            "s = MelSpec(cfg=SpecConfig.from_preset('quick'))(x)\n"
            "r = StatsRecorder(red_dims=(0, 1, 3))\nr.update(s)\n"
            "assert s.shape[:3] == (2, 1, 64) and r.mean.numel() == 64 and bool(torch.isfinite(r.std).all())\n"
            "assert sys.modules['torchaudio'] is None\nprint('ok', tuple(s.shape))\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith('ok (2, 1, 64,'), r.stdout[-3000:] + r.stderr[-2000:]
