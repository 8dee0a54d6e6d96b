"The API reference generator (tools/api_docs.py): every exported name gets a section, with its parameters' docments"
import sys
import textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
import api_docs  # noqa: E402


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
