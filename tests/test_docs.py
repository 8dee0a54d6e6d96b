"""The documentation: the API reference generator (tools/api_docs.py: every exported name gets a section, with its
parameters' docments), the command-line page (tools/cli_docs.py), the README as a front page whose links resolve, the
site's navigation and the notebook pages without upstream noise"""
import re
import sys
import textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import api_docs  # noqa: E402
import cli_docs  # noqa: E402
import run_nbs  # noqa: E402


def test_api_reference_covers_every_exported_name():
    pages = api_docs.pages()
    names = api_docs.exported_names()
    apps = {n for a in api_docs.APPS for n in __import__(a, fromlist=['_']).__all__}
    assert len(names) > 50 and {'run_comparison', 'export_dataset'} <= apps
    assert api_docs.documented_names(pages) == sorted(set(names) | apps)
    assert {'api/study.md', 'api/avmnist.md'} <= set(pages) and '## Applications' in pages['api/index.md']
    assert set(pages) == {'api/index.md'} | {api_docs.page_name(m) for m in api_docs.modules()}
    assert all(f'#{n})' in pages['api/index.md'] for n in names)


@pytest.fixture
def tiny_package(tmp_path, monkeypatch):
    "A package `docpkg` in fastnorm's layout: `docpkg.all` star-imports two modules"
    pkg = tmp_path/'docpkg'
    pkg.mkdir()
    (pkg/'__init__.py').write_text('')
    (pkg/'all.py').write_text('from .first import *\nfrom .second import *\n')
    (pkg/'first.py').write_text(textwrap.dedent('''
        "The first module, with `Scaler`"
        __all__ = ['scale', 'Scaler', 'LIMITS']
        LIMITS = {'low': 0, 'high': 10}

        def scale(x:float, # the value | any float
                  by:float=2., # the factor, see `Scaler`
                 )->float: # the scaled value
            "Multiply `x`"
            return x * by

        def hidden(y): # a name not in __all__
            return y

        class Scaler:
            "Scale by a fixed factor"
            def __init__(self, by:float=2.): # the factor
                self.by = by
            def __call__(self, x): return scale(x, self.by)
            def inverse(self, x:float, # a scaled value
                       ): return x / self.by
        '''))
    (pkg/'second.py').write_text('"Imported for its effect"\n__all__ = []\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield 'docpkg.all'
    for m in [m for m in sys.modules if m.startswith('docpkg')]:
        del sys.modules[m]


def test_pages_show_signatures_docstrings_and_docments(tiny_package):
    pages = api_docs.pages(tiny_package)
    assert list(pages) == ['api/index.md', 'api/first.md', 'api/second.md']
    assert api_docs.documented_names(pages) == api_docs.exported_names(tiny_package) == ['LIMITS', 'Scaler', 'scale']
    first = pages['api/first.md']
    assert first.startswith('# docpkg.first\n\nThe first module, with [`Scaler`](#Scaler)\n')
    assert "```python\ndef scale(x: float, by: float = 2.0) -> float\n```" in first
    assert '| `x` | `float` |  | the value \\| any float |' in first
    assert '| `by` | `float` | `2.0` | the factor, see [`Scaler`](#Scaler) |' in first
    assert '| **returns** | | | the scaled value |' in first
    assert '## Scaler { #Scaler }' in first and '| `by` | `float` | `2.0` | the factor |' in first
    assert '### Scaler.inverse { #Scaler.inverse }' in first and '| `x` | `float` |  | a scaled value |' in first
    assert "'low': 0," in first and 'hidden' not in first
    assert 'exports no names' in pages['api/second.md']
    assert '[`scale`](first.md#scale)' in pages['api/index.md']


README = ROOT/'README.md'
LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def test_readme_is_a_front_page_with_the_two_commands():
    text = README.read_text()
    assert len(README.read_bytes()) <= 8000
    assert ('python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/fastnorm compare --out runs/compare'
            in text)
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest -q' in text
    assert 'pip install fastnorm-audio' in text and not re.search(r'pip install "?fastnorm(\[|\s|$)', text)
    assert 'batch_tfms=[FreqSpecNorm()]' in text and 'docs/esc10/comparison.png' in text


def test_readme_links_resolve_in_the_repository():
    links = [l for l in LINK.findall(README.read_text()) if not re.match(r'^[a-z]+:', l)]
    assert len(links) > 15
    missing = [l for l in links if not (ROOT/l.split('#')[0]).exists()]
    assert missing == []


def test_cli_page_has_every_subcommand_and_option():
    from fastcore.script import anno_parser
    from fastnorm.cli import COMMANDS
    page = cli_docs.page()
    sections = dict(re.findall(r'^## fastnorm (\w+) \{ #\w+ \}\n(.*?)(?=^## |\Z)', page, re.M | re.S))
    assert list(sections) == list(COMMANDS) == ['compare', 'synth', 'export', 'deploy', 'adapt']
    for name, (func, line) in COMMANDS.items():
        acts = [a for a in anno_parser(func, name)._actions if a.help != '==SUPPRESS==' and a.dest != 'help']
        assert len(acts) >= 4
        for a in acts:
            assert f'| `{a.option_strings[0] if a.option_strings else a.dest}` |' in sections[name], (name, a.dest)
        assert f'[`fastnorm {name}`](#{name}) | {line} |' in page
    assert 'Normalizations: none wave global channel' in sections['compare']      # generated from the registries
    assert 'Methods: match' in sections['adapt'] and '| `learner` | str |' in sections['deploy']


def test_cli_page_follows_the_commands(monkeypatch):
    from fastcore.script import call_parse
    from fastnorm import cli

    @call_parse
    def hello(name:str='x', # whom to greet
              loud:bool=False, # shout
             ):
        "Say hello"
    monkeypatch.setitem(cli.COMMANDS, 'hello', (hello, 'greet someone'))
    page = cli_docs.page()
    assert '## fastnorm hello { #hello }' in page and '| `--name` | str | whom to greet (default: x) |' in page
    assert '| `--loud` |' in page and 'Say hello' in page


def test_quiet_drops_the_upstream_jit_warning_only():
    jit = ("site-packages/torch/jit/_script.py:1491: FutureWarning: `torch.jit.script` is deprecated. Please switch "
           "to `torch.compile` or `torch.export`.\n  warnings.warn(\n")
    own = "fastnorm/spec.py:12: UserWarning: 1 of the 128 mel filters have all zero values\n  warnings.warn(\n"
    stream = lambda text: {'output_type': 'stream', 'name': 'stderr', 'text': text}
    nb = {'cells': [{'cell_type': 'code', 'outputs': [stream(jit), {'output_type': 'stream', 'name': 'stdout',
                                                                      'text': jit}]},
                    {'cell_type': 'code', 'outputs': [stream([jit, own])]}, {'cell_type': 'markdown'}]}
    out = run_nbs.quiet(nb)['cells']
    assert out[0]['outputs'] == [{'output_type': 'stream', 'name': 'stdout', 'text': jit}]
    assert out[1]['outputs'] == [stream(own)] and out[2] == {'cell_type': 'markdown'}
    assert run_nbs.UPSTREAM_WARNINGS == ('ignore:`torch.jit.script` is deprecated:FutureWarning:torch.jit._script',)


def test_site_navigation_and_links():
    pytest.importorskip('mkdocs')
    import mkdocs_hooks
    nbs = [p.name for p in run_nbs.notebooks()]
    nav = mkdocs_hooks.nav(nbs)
    assert [next(iter(d)) for d in nav] == ['Home', 'Tutorials', 'Results', 'Guides', 'Reference', 'Benchmarks']
    results, guides = nav[2]['Results'], nav[3]['Guides']
    assert results[:len(mkdocs_hooks.RESULTS)] == [f'docs/results/{n}.md' for n in mkdocs_hooks.RESULTS]
    assert {'Saved run: esc10': 'docs/esc10/summary.md'} in results
    assert {f'docs/guides/{n}.md' for n in ('scale-out', 'deploy', 'fastaudio', 'install')} <= set(guides[:-1])
    assert guides[-1] == {'Contributing': 'CONTRIBUTING.md'}
    assert [next(iter(d)) for d in nav[4]['Reference']] == ['API', 'Command line', 'Changelog']
    site_of = mkdocs_hooks._site_paths(ROOT/'nbs')
    link = lambda target, src, uri: mkdocs_hooks.site_link(target, src, uri, site_of)
    assert link('nbs/11_deploy.ipynb', 'README.md', 'index.md') == '11_deploy.ipynb'
    guide = 'docs/guides/export.md'
    assert link('../../nbs/07_export.ipynb', guide, guide) == '../../07_export.ipynb'
    assert link('../../README.md#quickstart', 'docs/x/y.md', 'docs/x/y.md') == '../../index.md#quickstart'
    assert link('fastnorm/cli.py', 'README.md', 'index.md') == 'cli.md'
    assert link('docs/guides/deploy.md', 'README.md', 'index.md') == 'docs/guides/deploy.md'
    assert link('https://example.org/a.md', 'README.md', 'index.md') == 'https://example.org/a.md'
