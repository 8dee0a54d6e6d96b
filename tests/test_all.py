"""`fastnorm.all` is the user's namespace: library names only, the applications (fastnorm.study, fastnorm.avmnist)
beside it. And the layers, read from every module's imports: the core never imports an application or the fastaudio
port, and the two applications never import each other."""
import ast, importlib
from pathlib import Path
from test_imports import PKG, modules

APPS = ('study', 'avmnist')
CORE_NAMES = ['StatsRecorder', 'compute_stats', 'FreqSpecNorm', 'GlobalSpecNorm', 'InstanceSpecNorm', 'add_spec_norm',
              'SpecAugment', 'FreqMask', 'TimeMask', 'MelSpec', 'SpecConfig', 'TensorSpec', 'AudioTensor', 'AudioBlock',
              'esc50_dls', 'esc50_dblock', 'fsdd_dls', 'folder_dls', 'detect_layout', 'synth_esc50', 'SpecCache',
              'AddNoise', 'NoiseClips', 'PCEN', 'spec_to_audio', 'load_audio', 'resample']

def star_exports(module:str='fastnorm.all')->dict:
    "Name -> object of what `from module import *` gives, computed in this process"
    ns = {}
    exec(f'from {module} import *', ns)
    return {k: v for k, v in ns.items() if k != '__builtins__'}

def test_all_exports_library_names_only():
    names = star_exports()
    from_apps = sorted(k for k, v in names.items()
                       if getattr(v, '__module__', '').split('.')[:2] in (['fastnorm', a] for a in APPS))
    assert not from_apps, f"fastnorm.all exports names defined in fastnorm.study / fastnorm.avmnist: {from_apps}"
    missing = sorted(set(CORE_NAMES) - set(names))
    assert not missing, f"fastnorm.all lacks names a user calls: {missing}"

def test_no_application_module_contributes_a_name():
    "Neither by a star import in all.py, nor by an object of theirs that some core module re-exports"
    tree = ast.parse((PKG/'all.py').read_text())
    sources = [(n.level, n.module or '') for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    bad = [(lvl, m) for lvl, m in sources if lvl != 1 or m.split('.')[0] in (*APPS, 'fastaudio', 'cli')]
    assert sources and not bad, f"all.py imports from outside the core: {bad}"
    names = star_exports()
    app_mods = [importlib.import_module(m.removesuffix('.__init__')) for m in modules()
                if m.split('.')[1] in APPS]
    core_ids = {id(v) for m in modules() if layer(m) == 'core' and m != 'fastnorm.__main__'
                for v in vars(importlib.import_module(m.removesuffix('.__init__'))).values()}
    app_ids = {id(v): f'{mod.__name__}.{k}' for mod in app_mods for k, v in vars(mod).items()
               if not k.startswith('_') and id(v) not in core_ids}
    contributed = sorted(app_ids[id(v)] for v in names.values() if id(v) in app_ids)
    assert not contributed, contributed

def test_the_applications_are_reached_as_packages():
    import fastnorm.study as study, fastnorm.avmnist as avmnist
    assert callable(study.run_comparison) and study.CompareConfig and callable(avmnist.export_dataset)

# --- layers ---

def layer(module:str)->str:
    "'study', 'avmnist', 'fastaudio', 'entry' (the command line) or 'core', of a dotted fastnorm module or name"
    parts = module.split('.')
    if len(parts) > 1 and parts[1] in (*APPS, 'fastaudio'): return parts[1]
    if len(parts) > 1 and parts[1] in ('cli', '__main__'): return 'entry'
    return 'core'

# layer -> the layers it must not import
FORBIDDEN = {'core': {'study', 'avmnist', 'fastaudio', 'entry'}, 'study': {'avmnist', 'entry'},
             'avmnist': {'study', 'entry'}}

def imported(name:str, # the module's dotted name, as `modules()` gives it (a package's ends in `.__init__`)
             f:Path, # its file
            )->set:
    """Every fastnorm module or name that `f` imports anywhere in its code (in functions too), as dotted names:
    `from ..study import run_comparison` in fastnorm/data.py gives 'fastnorm.study' and 'fastnorm.study.run_comparison'"""
    pkg = name.removesuffix('.__init__') if f.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parts = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            found |= {base} | {f'{base}.{a.name}' for a in node.names}
        elif isinstance(node, ast.Import): found |= {a.name for a in node.names}
    return {t for t in found if t.split('.')[0] == 'fastnorm'}

def layer_violations(mods:dict)->list:
    "`(module, imported name)` pairs where a module imports a layer it must not"
    return sorted((m, t) for m, f in mods.items() for t in imported(m, f)
                  if layer(t) in FORBIDDEN.get(layer(m), ()))

def test_layers_import_one_way():
    mods = modules()
    assert {layer(m) for m in mods} == {'core', 'study', 'avmnist', 'fastaudio', 'entry'}
    assert 'fastnorm.study.__init__' in mods and layer('fastnorm.data') == 'core'
    assert not layer_violations(mods), layer_violations(mods)
    assert any(layer(t) == 'core' for t in imported('fastnorm.study.run', mods['fastnorm.study.run']))

def test_layer_checker_catches_a_violation(tmp_path):
    "A tiny package in fastnorm's layout, with one forbidden import of each kind"
    pkg = tmp_path/'fastnorm'
    for d in (pkg, pkg/'study', pkg/'avmnist'): d.mkdir()
    files = {'__init__.py': '', 'data.py': 'def f():\n    from .study import run_comparison\n',
             'spec.py': 'import fastnorm.fastaudio.core\n', 'cli.py': 'from .study import run_comparison\n',
             'study/__init__.py': 'from .compare import *\n', 'study/compare.py': 'from ..avmnist.export import x\n',
             'avmnist/__init__.py': 'from .. import data\n', 'avmnist/export.py': 'from ..data import f\n'}
    for k, v in files.items(): (pkg/k).write_text(v)
    mods = {'.'.join(f.relative_to(tmp_path).with_suffix('').parts): f for f in sorted(pkg.rglob('*.py'))}
    assert layer_violations(mods) == [
        ('fastnorm.data', 'fastnorm.study'), ('fastnorm.data', 'fastnorm.study.run_comparison'),
        ('fastnorm.spec', 'fastnorm.fastaudio.core'),
        ('fastnorm.study.compare', 'fastnorm.avmnist.export'), ('fastnorm.study.compare', 'fastnorm.avmnist.export.x')]
