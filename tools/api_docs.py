"""fastnorm's API reference, generated: one markdown page per module that `fastnorm.all` star-imports, and one per
application package (`fastnorm.study`, `fastnorm.avmnist`, which `fastnorm.all` leaves out); on each page a section for
every name in that module's `__all__` with its signature, docstring and docments (the trailing comment of each
parameter, read by `fastcore.docments`). The module list is read from `fastnorm/all.py`, so a module added there gets
its page without any change here. Used by the docs build (tools/mkdocs_hooks.py) and by tests/test_docs.py."""
import ast
import importlib
import inspect
import pprint
import re

__all__ = ['ALL_MODULE', 'APPS', 'modules', 'exported_names', 'page_name', 'module_page', 'index_page', 'pages',
           'documented_names']

ALL_MODULE = 'fastnorm.all'
APPS = ('fastnorm.study', 'fastnorm.avmnist')   # the applications: documented by what their package exports
MAX_VALUE_LINES = 12               # a constant's value is shown up to this many lines


def modules(all_module=ALL_MODULE, apps=None):
    """The modules that `all_module` star-imports, in the order it imports them (read from its source), then the
    application packages `apps` (default: `APPS` for fastnorm's own `all`, none for another package)"""
    mod = importlib.import_module(all_module)
    names = []
    for node in ast.parse(inspect.getsource(mod)).body:
        if isinstance(node, ast.ImportFrom) and any(a.name == '*' for a in node.names):
            names.append(importlib.util.resolve_name('.' * node.level + (node.module or ''), mod.__package__))
    if apps is None:
        apps = APPS if all_module == ALL_MODULE else ()
    return [importlib.import_module(n) for n in names + list(apps)]


def exported_names(all_module=ALL_MODULE):
    "The names `from <all_module> import *` gives"
    ns = {}
    exec(f'from {all_module} import *', ns)
    return sorted(k for k in ns if k != '__builtins__')


def page_name(mod):
    "Page of module `mod` in the site: `api/<name without the package>.md`"
    return 'api/' + mod.__name__.split('.', 1)[-1] + '.md'


def _clean(s):
    "A repr without memory addresses, so pages do not change from run to run"
    return re.sub(r' at 0x[0-9a-f]+', '', s)


def _default(v):
    if inspect.isfunction(v) or inspect.isclass(v):
        return v.__qualname__
    return _clean(repr(v))


def _annotation(a):
    return a if isinstance(a, str) else inspect.formatannotation(a)


def _params(obj):
    "The parameters of `obj`'s signature (without `self`), or None when it has none that inspect can read"
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None, None
    params = list(sig.parameters.values())
    if params and params[0].name == 'self':
        params = params[1:]
    ret = sig.return_annotation
    return params, (None if ret is inspect.Signature.empty or ret is None else _annotation(ret))


def _param_text(p):
    stars = {p.VAR_POSITIONAL: '*', p.VAR_KEYWORD: '**'}.get(p.kind, '')
    text = stars + p.name
    if p.annotation is not p.empty:
        text += f': {_annotation(p.annotation)}'
    if p.default is not p.empty:
        text += (' = ' if p.annotation is not p.empty else '=') + _default(p.default)
    return text


def _signature(kind, name, obj):
    "A python code block with the signature, one parameter per line when it is long"
    params, ret = _params(obj)
    if params is None:
        return ''
    args = [_param_text(p) for p in params]
    tail = f' -> {ret}' if ret else ''
    one_line = f'{kind} {name}({", ".join(args)}){tail}'
    text = one_line if len(one_line) <= 100 else f'{kind} {name}(\n' + ''.join(f'    {a},\n' for a in args) + f'){tail}'
    return f'```python\n{text}\n```\n'


def _docments(obj):
    "Each parameter's trailing comment, {} when there are none or fastcore cannot read the source"
    from fastcore.docments import docments
    try:
        return {k: v for k, v in docments(obj).items() if v}
    except Exception:        # builtins, C extensions, objects without source: no docments to show
        return {}


def _cell(s):
    "Text for a table cell: one line, `|` escaped outside code spans (Python-Markdown does not split cells inside them)"
    parts = re.split(r'(`[^`]*`)', str(s).replace('\n', ' '))
    return ''.join(p if p.startswith('`') else p.replace('|', '\\|') for p in parts)


class _Linker:
    "Turns `Name` in prose into a link to Name's section, for every exported name"
    def __init__(self, targets):
        self.targets = targets

    def __call__(self, text, here):
        def link(m):
            target = self.targets.get(m.group(1))
            if target is None:
                return m.group(0)
            page, anchor = target
            href = f'#{anchor}' if page == here else f'{page.split("/")[-1]}#{anchor}'
            return f'[`{m.group(1)}`]({href})'
        return re.sub(r'(?<![\[`])`([A-Za-z_]\w*)`(?![`\]])', link, text)


def _params_table(obj, link, here):
    "A table of the parameters, when at least one has a docment (otherwise the signature says it all)"
    params, _ = _params(obj)
    comments = _docments(obj)
    if not comments:
        return ''
    rows = []
    for p in params or []:
        anno = _cell(f'`{_annotation(p.annotation)}`') if p.annotation is not p.empty else ''
        default = _cell(f'`{_default(p.default)}`') if p.default is not p.empty else ''
        rows.append(f'| `{p.name}` | {anno} | {default} | {_cell(link(comments.get(p.name, ""), here))} |')
    if comments.get('return'):
        rows.append(f'| **returns** | | | {_cell(link(comments["return"], here))} |')
    if not rows:
        return ''
    return '| parameter | type | default | details |\n|---|---|---|---|\n' + '\n'.join(rows) + '\n'


def _doc(obj, link, here):
    doc = inspect.getdoc(obj)
    return link(doc, here) + '\n' if doc else ''


def _methods(cls):
    "Public methods, class/static methods and properties that `cls` itself defines"
    out = []
    for name, v in vars(cls).items():
        if name.startswith('_'):
            continue
        if isinstance(v, (classmethod, staticmethod)):
            out.append((name, v.__func__, 'classmethod' if isinstance(v, classmethod) else 'staticmethod'))
        elif isinstance(v, property):
            out.append((name, v.fget, 'property'))
        elif inspect.isfunction(v):
            out.append((name, v, 'def'))
    return out


def _value(obj):
    "A constant's value: a dict one key per line, anything else pretty-printed; at most `MAX_VALUE_LINES` lines"
    if isinstance(obj, dict):
        lines = [_short(f'{k!r}: {_clean(repr(v))},') for k, v in obj.items()]
    else:
        lines = _clean(pprint.pformat(obj, width=100, sort_dicts=False)).splitlines()
    if len(lines) > MAX_VALUE_LINES:
        lines = lines[:MAX_VALUE_LINES] + ['...']
    return '```python\n' + '\n'.join(lines) + '\n```\n'


def _short(line, width=110):
    return line if len(line) <= width else line[:width - 4] + ' ...'


def _section(name, obj, link, here):
    "The markdown for one exported name"
    out = [f'## {name} {{ #{name} }}\n']
    if inspect.isclass(obj):
        out += [_signature('class', name, obj), _doc(obj, link, here), _params_table(obj, link, here)]
        for m, f, kind in _methods(obj):
            out.append(f'### {name}.{m} {{ #{name}.{m} }}\n')
            if kind == 'property':
                out.append(f'*property*\n\n{_doc(f, link, here)}')
                continue
            label = 'def' if kind == 'def' else f'@{kind}\ndef'
            out += [_signature(label, m, f), _doc(f, link, here), _params_table(f, link, here)]
    elif callable(obj):
        out += [_signature('def', name, obj), _doc(obj, link, here), _params_table(obj, link, here)]
    else:
        out += [f'`{type(obj).__name__}`\n', _value(obj)]
    return '\n'.join(o for o in out if o)


def module_page(mod, link=None):
    "The markdown page of `mod`: its docstring, then a section per name in its `__all__`"
    link = link or _Linker({})
    here = page_name(mod)
    out = [f'# {mod.__name__}\n', _doc(mod, link, here)]
    names = list(getattr(mod, '__all__', []))
    if not names:
        out.append('*This module exports no names: it works by being imported.*\n')
    for name in names:
        out.append(_section(name, getattr(mod, name), link, here))
    return '\n'.join(o for o in out if o)


def _index_rows(mods):
    rows = []
    for mod in mods:
        page = page_name(mod).split('/')[-1]
        summary = (inspect.getdoc(mod) or '').split('\n\n')[0].replace('\n', ' ')
        names = ', '.join(f'[`{n}`]({page}#{n})' for n in getattr(mod, '__all__', []))
        rows.append(f'| [{mod.__name__}]({page}) | {_cell(summary)} | {names} |')
    return '| module | what | names |\n|---|---|---|\n' + '\n'.join(rows) + '\n'


def index_page(mods):
    "The API reference's first page: each module, what it is, and its names; the application packages last"
    lib = [m for m in mods if m.__name__ not in APPS]
    apps = [m for m in mods if m.__name__ in APPS]
    out = ('# API reference\n\nEvery name that `from fastnorm.all import *` gives, by the module that defines it. '
           'The parameter descriptions are the comments beside each parameter in the source (fastai\'s docments).\n\n'
           + _index_rows(lib))
    if apps:
        out += ('\n## Applications\n\nThe commands `fastnorm compare` and `fastnorm export`, as packages of their own '
                '(`import fastnorm.study`); `fastnorm.all` does not export them.\n\n' + _index_rows(apps))
    return out


def pages(all_module=ALL_MODULE, apps=None):
    "{site path: markdown} for the API reference: `api/index.md` and one page per module (see `modules`)"
    mods = modules(all_module, apps)
    targets = {n: (page_name(m), n) for m in mods for n in getattr(m, '__all__', [])}
    link = _Linker(targets)
    out = {'api/index.md': index_page(mods)}
    for m in mods:
        out[page_name(m)] = module_page(m, link)
    return out


def documented_names(md_pages):
    "The names that have a section (a `## name { #name }` heading) in the markdown `md_pages`"
    return sorted({m.group(1) for text in md_pages.values() for m in re.finditer(r'^## (\S+) \{ #\1 \}$', text, re.M)})
