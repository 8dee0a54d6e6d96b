import math, numpy as np, pytest, torch
from fastnorm.pcen import pcen_smoothing, ema_filter, pcen, PCEN, PCENTransform
from fastnorm.spec import TensorSpec, SpecConfig
from conftest import needs, EXAMPLES, FSDD

def test_ema_filter_exact_on_a_tiny_input():
    # M[t] = (1-s) M[t-1] + s x[t], M[-1] = init: with s=.5, init=1 and x = 1,0,2,0 -> 1, .5, 1.25, .625
    x = torch.tensor([[1., 0., 2., 0.]])
    assert ema_filter(x, .5).tolist() == [[1., .5, 1.25, .625]]
    assert ema_filter(x, .5, init=0.).tolist() == [[.5, .25, 1.125, .5625]]
    assert ema_filter(x, 1.).tolist() == x.tolist() and ema_filter(x, 0.).tolist() == [[1., 1., 1., 1.]]

@pytest.mark.parametrize('T', [1, 5, 16, 17, 431, 1000])
def test_ema_filter_matches_scipy_lfilter_per_band(T):
    import scipy.signal as ss
    x = np.random.default_rng(T).random((2, 1, 3, T))
    s = np.array([.01, .2, .9])
    got = ema_filter(torch.tensor(x), torch.tensor(s)).numpy()
    ref = np.stack([ss.lfilter([b], [1, b - 1], x[:, :, i], zi=np.full((1, 1, 1), 1 - b), axis=-1)[0] for i, b in enumerate(s)], 2)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=0)

def test_ema_filter_keeps_relative_precision_in_float32_after_a_loud_start():
    # a loud frame then a near-silent tail: every term of the recurrence is non-negative, so float32 keeps ~1e-6 relative error
    x = torch.cat([torch.full((1, 1, 5), 1e6), torch.full((1, 1, 400), 1e-9)], -1)
    ref = ema_filter(x.double(), .3, init=0.)
    rel = ((ema_filter(x, .3, init=0.).double() - ref).abs() / ref).max()
    assert rel < 1e-5 and (ema_filter(x, .3, init=0.) > 0).all()

def test_smoothing_coefficient_as_librosa():
    t = .4 * 22050 / 512
    assert pcen_smoothing(22050, 512) == pytest.approx((math.sqrt(1 + 4 * t * t) - 1) / (2 * t * t), rel=1e-15)
    with pytest.raises(ValueError, match=r"`time_constant` must be a positive number \(0 given\)"): pcen_smoothing(16000, 256, 0)

def test_pcen_exact_value_on_a_constant_input():
    # a constant E equal to the initial state keeps M = E, so PCEN = (E/(eps+E)^a + d)^r - d^r
    E, a, d, r, eps = 1., .5, 2., .5, 1e-6
    want = (E / (eps + E) ** a + d) ** r - d ** r
    got = pcen(torch.full((1, 2, 7), E, dtype=torch.float64), gain=a, bias=d, power=r, eps=eps, s=.3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13)

# PCEN of librosa's own mel spectrogram of the shared recordings, float64 and float32 (tolerances stated here)
@needs(EXAMPLES)
@pytest.mark.parametrize('scale', [1., 2.**31])
@pytest.mark.parametrize('kw', [{}, dict(gain=.8, bias=10., power=.25, time_constant=.06), dict(power=0.), dict(bias=0.)])
def test_parity_with_librosa_pcen_on_real_recordings(scale, kw):
    import librosa
    for f in sorted(EXAMPLES.glob('*.ogg')) + [FSDD/'7_jackson_32.wav']:
        if not f.exists(): continue
        y, sr = librosa.load(f, sr=None)
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256, n_mels=64).astype(np.float64) * scale
        ref = librosa.pcen(S, sr=sr, hop_length=256, **kw)
        np.testing.assert_allclose(pcen(torch.tensor(S, dtype=torch.float64), sr, 256, **kw).numpy(), ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(pcen(torch.from_numpy(S.astype(np.float32)), sr, 256, **kw).numpy(), ref, rtol=2e-5, atol=1e-6)

def test_pcen_batch_equals_item_by_item_and_per_band_params():
    x = torch.rand(3, 1, 4, 50) ** 3 * 100
    g = torch.tensor([.9, .95, .98, .5])
    full = pcen(x, 16000, 256, gain=g)
    for i in range(3):
        for f in range(4):
            torch.testing.assert_close(full[i, :, f], pcen(x[i, :, f:f+1], 16000, 256, gain=float(g[f]))[:, 0], rtol=1e-6, atol=1e-7)

def test_pcen_errors_and_input_untouched():
    x = torch.rand(1, 1, 4, 20)
    before = x.clone()
    pcen(x)
    assert torch.equal(x, before)
    with pytest.raises(ValueError, match='non-negative .* turn dB into power'): pcen(x - 1)
    with pytest.raises(ValueError, match=r"`gain` must be a finite number >= 0 \(-1 given\)"): pcen(x, gain=-1)
    with pytest.raises(ValueError, match=r'one value per frequency band \(4\), not shape \[3\]'): pcen(x, gain=torch.ones(3))
    with pytest.raises(ValueError, match=r"`s` must be a finite number in \[0, 1\]"): ema_filter(x, 1.5)

def test_pcen_module_trainable_and_fixed():
    m = PCEN(4, sr=16000, hop_length=256)
    assert m.params.shape == (4, 4) and m.params.requires_grad
    torch.testing.assert_close(m.gain, torch.full((4,), .98))
    torch.testing.assert_close(m.s, torch.full((4,), pcen_smoothing(16000, 256)))
    x = torch.rand(2, 1, 4, 30) ** 2 * 50
    torch.testing.assert_close(m(x), pcen(x, 16000, 256).detach(), rtol=1e-5, atol=1e-6)
    m(x).sum().backward()
    assert m.params.grad is not None and torch.isfinite(m.params.grad).all() and (m.params.grad.abs() > 0).all()
    fixed = PCEN(4, trainable=False, from_db=True, scale=2.)
    db = 10 * torch.log10(x)
    torch.testing.assert_close(fixed(db), pcen(2 * x, 16000, 256), rtol=1e-4, atol=1e-5)
    assert not fixed.params.requires_grad
    with pytest.raises(ValueError, match=r'made for 4 frequency bands but the input has 5'): m(torch.rand(1, 1, 5, 8))
    with pytest.raises(ValueError, match=r"`bias` must be a positive number \(0 given\)"): PCEN(4, bias=0)

def test_pcen_transform_undoes_db_and_keeps_cfg():
    cfg = SpecConfig(sr=16000, hop_length=256, n_mels=4)
    p = torch.rand(2, 1, 4, 30) + .01
    out = PCENTransform(scale=10.)(TensorSpec(10 * torch.log10(p), cfg=cfg))
    assert isinstance(out, TensorSpec) and out.cfg == cfg
    torch.testing.assert_close(out.as_subclass(torch.Tensor), pcen(10 * p, 16000, 256), rtol=1e-4, atol=1e-6)
    power = PCENTransform()(TensorSpec(p, cfg=cfg.replace(db=False)))
    torch.testing.assert_close(power.as_subclass(torch.Tensor), pcen(p, 16000, 256))

def test_empty_inputs_give_empty_outputs():
    "No frames (or no items): the shape comes back, no error"
    for shape in [(2, 1, 8, 0), (0, 1, 8, 5)]:
        x = torch.ones(shape)
        assert ema_filter(x, .3).shape == shape and pcen(x).shape == shape

def test_nan_parameters_are_rejected():
    nan, x = float('nan'), torch.rand(2, 1, 4, 8)
    with pytest.raises(ValueError, match=r'`eps` must be a positive number \(nan given\)'): pcen(x, eps=nan)
    with pytest.raises(ValueError, match=r'`gain` must be a finite number >= 0 \(nan given\)'): pcen(x, gain=nan)
    with pytest.raises(ValueError, match=r'`s` must be a finite number in \[0, 1\] \(\[nan\] given\)'):
        ema_filter(x, torch.tensor(nan))
    with pytest.raises(ValueError, match=r'`scale` must be a positive number \(nan given\)'): PCENTransform(scale=nan)
