import math
import pytest, torch
from fastnorm.audio import AudioTensor
from fastnorm.spec import MelSpec, SpecConfig, TensorSpec
from fastnorm.norm import GlobalSpecNorm
from fastnorm.invert import *
from fastnorm.dsp import db_to_power
from conftest import EXAMPLES, needs

SR = 16000

def chirp(sr=SR, n=SR):
    t = torch.arange(n) / sr
    return AudioTensor((0.5 * torch.sin(2 * math.pi * (200 * t + (3000 - 200) / 2 * t ** 2)))[None], sr=sr)

def mel_err(a, b, top_db=80.):
    "Mean |dB difference| (both floored at b's max - top_db, so silence doesn't dominate) and spectral convergence of the powers"
    a, b = a.as_subclass(torch.Tensor), b.as_subclass(torch.Tensor)
    fl = b.amax() - top_db
    db = float((a.clamp(min=fl) - b.clamp(min=fl)).abs().mean())
    pa, pb = db_to_power(a), db_to_power(b)
    return db, float(torch.linalg.norm(pa - pb) / torch.linalg.norm(pb))

def round_trip(x, ms, **kw):
    s = ms(x)
    y = spec_to_audio(s, length=x.shape[-1], generator=torch.Generator().manual_seed(0), **kw)
    return s, y, mel_err(ms(y), s)

# Measured (quick preset, 32 + 32 iterations): chirp 1.4 dB / SC 0.07, trumpet 2.3 dB / 0.055, speech 0.44 dB / 0.063.
# Unrelated signals (trumpet vs speech) differ by ~22 dB / SC 7, a chirp vs its reverse by 12 dB / SC 1.4: the thresholds sit
# well inside that gap, with room for Griffin-Lim's random start.
@pytest.mark.slow
def test_round_trip_chirp():
    x = chirp()
    s, y, (db, sc) = round_trip(x, MelSpec.from_preset('quick'))
    assert isinstance(y, AudioTensor) and y.sr == SR and y.shape == x.shape
    assert db < 3 and sc < 0.15
    _, _, (db0, _) = round_trip(x, MelSpec.from_preset('quick'), mel_iter=0)  # the clamped pseudo-inverse alone
    assert db0 > 2 * db  # measured 8.8 dB against 1.4: why the NNLS refinement is on by default

@pytest.mark.slow
@needs(EXAMPLES)
def test_round_trip_recording():
    x = AudioTensor.create(EXAMPLES/'sorohanro_-_solo-trumpet-06.ogg', sr=SR)[..., :2 * SR]
    _, y, (db, sc) = round_trip(x, MelSpec.from_preset('quick'))
    assert db < 4 and sc < 0.12

def test_linear_and_magnitude_specs():
    x = chirp(n=8000)
    for ms in (MelSpec(n_mels=None, n_fft=400, hop_length=200), MelSpec(power=1.), MelSpec(db=False)):
        s, y, _ = round_trip(x, ms)
        c = ms.cfg
        r = ms(y).as_subclass(torch.Tensor)
        p = lambda v: (db_to_power(v, c.power) if c.db else v) ** (2 / c.power)  # compare powers
        sc = float(torch.linalg.norm(p(r) - p(s.as_subclass(torch.Tensor))) / torch.linalg.norm(p(s.as_subclass(torch.Tensor))))
        assert sc < 0.2, (c, sc)

def test_batch_shapes_and_length():
    x = AudioTensor(torch.cat([chirp(n=4000), chirp(n=4000).flip(-1)])[:, None].repeat(1, 2, 1), sr=SR)  # [2,2,4000]
    s = MelSpec()(x)
    y = spec_to_audio(s, n_iter=4)
    assert y.shape == (2, 2, 256 * (s.shape[-1] - 1)) and y.sr == SR
    assert spec_to_audio(s[0], n_iter=4, length=4000).shape == (2, 4000)  # an item
    g = lambda: torch.Generator().manual_seed(1)
    assert torch.equal(spec_to_audio(s, n_iter=4, generator=g()), spec_to_audio(s, n_iter=4, generator=g()))

def test_mel_to_linear_inverts_filterbank():
    cfg = SpecConfig()
    fb, pinv = mel_pinv(cfg)
    assert fb.shape == pinv.shape == (257, 64)
    lin = torch.rand(3, 257, 10) ** 4
    mel = fb.T @ lin
    est = mel_to_linear(mel, cfg, n_iter=100)
    assert (est >= 0).all() and torch.linalg.norm(fb.T @ est - mel) / torch.linalg.norm(mel) < 0.02

def test_griffinlim_recovers_tone():
    x = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / SR)
    spec = torch.stft(x, 512, 128, window=torch.hann_window(512), return_complex=True).abs() ** 2
    y = griffinlim(spec, 512, 128, n_iter=32, length=8000, generator=torch.Generator().manual_seed(0))
    re = torch.stft(y, 512, 128, window=torch.hann_window(512), return_complex=True).abs() ** 2
    assert torch.linalg.norm(re.sqrt() - spec.sqrt()) / torch.linalg.norm(spec.sqrt()) < 0.1

def test_errors():
    s = MelSpec()(chirp(n=4000))
    with pytest.raises(ValueError, match='no `cfg`'): spec_to_audio(TensorSpec(s.as_subclass(torch.Tensor).clone()))
    with pytest.raises(ValueError, match='no `cfg`'): spec_to_audio(s.as_subclass(torch.Tensor).clone())
    with pytest.raises(ValueError, match=r'\[C,F,T\]'): spec_to_audio(s[0, 0])
    with pytest.raises(ValueError, match='frequency rows'): spec_to_audio(s[:, :10])
    # normalized spectrograms: far below the -100 dB floor, or the zero-mean unit-std signature
    norm = GlobalSpecNorm(mean=float(s.mean()), std=float(s.std()))
    xb = s.repeat(2, 1, 1, 1)
    with pytest.raises(ValueError, match='looks normalized.*decode'): spec_to_audio(norm(xb))
    with pytest.raises(ValueError, match='below the -100 dB floor'): spec_to_audio(TensorSpec(s * 100, cfg=s.cfg))
    with pytest.raises(ValueError, match='negative values'): spec_to_audio(TensorSpec(-torch.ones(1, 64, 10), cfg=SpecConfig(db=False)))
    with pytest.raises(ValueError, match='NaN'): spec_to_audio(TensorSpec(torch.full((1, 64, 10), float('nan')), cfg=s.cfg))
    assert spec_to_audio(norm.decode(norm(xb)), n_iter=2).shape[0] == 2  # denormalized: fine
    assert torch.isfinite(spec_to_audio(norm(xb), n_iter=2, check=False)).all()  # check=False: the user's call
    with pytest.raises(ValueError, match='n_iter'): griffinlim(torch.ones(257, 4), 512, 128, n_iter=-1)
    with pytest.raises(ValueError, match='momentum'): griffinlim(torch.ones(257, 4), 512, 128, momentum=1.)
    with pytest.raises(ValueError, match='n_fft=512 needs 257'): griffinlim(torch.ones(64, 4), 512, 128)
    with pytest.raises(ValueError, match='n_mels'): mel_pinv(SpecConfig(n_mels=None))

@pytest.mark.parametrize('call, name', [
    (lambda: griffinlim(torch.ones(257, 4), 512, 128, n_iter=math.nan), 'n_iter'),
    (lambda: griffinlim(torch.ones(257, 4), 512, 128, momentum=math.nan), 'momentum'),
    (lambda: griffinlim(torch.ones(257, 4), 512, 128, power=math.nan), 'power'),
    (lambda: mel_to_linear(torch.ones(64, 4), SpecConfig(), n_iter=math.nan), 'n_iter'),
    (lambda: spec_to_audio(MelSpec(sr=8000)(AudioTensor(torch.randn(1, 1, 800), sr=8000)), mel_iter=math.nan), 'n_iter'),
])
def test_nan_is_refused_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\(nan given\)"): call()
