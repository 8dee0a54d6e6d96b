import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/'shared'/'data'
EXAMPLES = SHARED/'examples'
FSDD = SHARED/'fsdd'/'recordings'

# every test session (and the notebooks it runs) gets its own fastnorm home, so no test reads a user's cache
if not os.environ.get('FASTNORM_HOME'):  # unset or empty (which fastnorm reads as unset)
    import tempfile
    os.environ['FASTNORM_HOME'] = tempfile.mkdtemp(prefix='fastnorm-test-')
os.environ.setdefault('MPLBACKEND', 'Agg')

def needs(path):
    "Skip a test cleanly when the shared data it reads is absent"
    return pytest.mark.skipif(not Path(path).exists(), reason=f"shared data not found: {path}")

@pytest.fixture(scope='session')
def tiny_esc50(tmp_path_factory):
    "A small embedded dataset in ESC-50's layout: 4 classes x 10 clips of 1 s at 8 kHz"
    from fastnorm.synth import synth_esc50
    return synth_esc50(tmp_path_factory.mktemp('synth')/'tiny', seed=0, n_classes=4, clips_per_class=10, seconds=1.0, sr=8000)

# property-based tests (tests/test_fuzz.py): a small, fixed budget in the quick loop (`-m "not slow"`), a larger one in
# the full suite; FASTNORM_FUZZ=quick|full chooses, and FASTNORM_FUZZ=N explores: N random (not fixed) examples each,
# to look for new failures (keep each one found as an `@example`). Deterministic (derandomize, no example database) and no deadline:
# a slow machine must not fail a property
try:
    from hypothesis import settings as _hyp, HealthCheck as _HC
    _common = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                   suppress_health_check=[_HC.too_slow, _HC.function_scoped_fixture, _HC.data_too_large])
    _hyp.register_profile('quick', max_examples=25, **_common)
    _hyp.register_profile('full', max_examples=200, **_common)
except ImportError:  # hypothesis is in the `test` extra; without it test_fuzz.py skips
    _hyp = None

def pytest_configure(config):
    if _hyp is None: return
    quick = 'not slow' in (config.getoption('markexpr', '') or '')
    profile = os.environ.get('FASTNORM_FUZZ', 'quick' if quick else 'full')
    if profile.isdigit():
        _hyp.register_profile('explore', max_examples=int(profile), **{**_common, 'derandomize': False})
        profile = 'explore'
    _hyp.load_profile(profile)
