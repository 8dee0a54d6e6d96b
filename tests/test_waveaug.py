import math
import pytest, torch
from fastnorm.audio import AudioTensor, AudioNormalize
from fastnorm.spec import MelSpec
from fastnorm.waveaug import *

SR = 16000

def tone(f, n=SR, amp=0.5, sr=SR, b=1):
    t = torch.arange(n) / sr
    return AudioTensor((amp * torch.sin(2 * math.pi * f * t)).repeat(b, 1, 1), sr=sr)

def batch(b=4, n=SR, seed=0):
    g = torch.Generator().manual_seed(seed)
    return AudioTensor(torch.randn(b, 1, n, generator=g) * torch.linspace(0.1, 2, b)[:, None, None], sr=SR)

def spectrum(x):
    "Magnitude spectrum of a `[N]` signal and its frequencies (Hz)"
    return torch.fft.rfft(torch.as_tensor(x).as_subclass(torch.Tensor)).abs(), torch.fft.rfftfreq(x.shape[-1], 1 / SR)

def snr_db(clean, noisy):
    c, d = clean.as_subclass(torch.Tensor), (noisy - clean).as_subclass(torch.Tensor)
    return 10 * torch.log10(c.pow(2).sum((-2, -1)) / d.pow(2).sum((-2, -1)))

ALL = [lambda **k: AddNoise(**k), lambda **k: AddNoise(color='pink', **k), lambda **k: BurstNoise(**k), lambda **k: BandStop(**k),
       lambda **k: Alias(**k), lambda **k: Distortion(**k)]
NAMES = ['AddNoise', 'AddNoise-pink', 'BurstNoise', 'BandStop', 'Alias', 'Distortion']

@pytest.mark.parametrize('make', ALL, ids=NAMES)
def test_contract(make):
    "train only, input untouched, same seed same output, type and sr kept, silent items stay silent and finite"
    x = batch()
    x0 = x.clone()
    assert torch.equal(make(seed=1)(x, split_idx=1), x)  # validation: unchanged
    y = make(seed=1)(x, split_idx=0)
    assert torch.equal(x, x0) and isinstance(y, AudioTensor) and y.sr == SR and y.shape == x.shape
    assert not torch.equal(y, x) and torch.equal(y, make(seed=1)(x, split_idx=0))
    assert not torch.equal(y, make(seed=2)(x, split_idx=0))
    z = make(seed=1)(AudioTensor(torch.zeros(3, 2, SR), sr=SR), split_idx=0)
    assert torch.isfinite(z).all() and z.abs().max() == 0
    assert make(seed=1)(x[0], split_idx=0).shape == x[0].shape  # an item `[C,N]` goes through as a batch of one
    off = make(seed=1, p=0.)(x, split_idx=0)
    assert torch.equal(off, x)
    on = make(seed=1, draw={'apply': [True, False, True, False]})(x, split_idx=0)
    assert torch.equal(on[1], x[1]) and torch.equal(on[3], x[3]) and not torch.equal(on[0], x[0])

def test_order_between_normalize_and_melspec():
    for t in (AddNoise(), BurstNoise(), BandStop(), Alias(), Distortion()): assert AudioNormalize.order < t.order < MelSpec.order

@pytest.mark.parametrize('color', ['white', 'pink'])
def test_addnoise_snr(color):
    x = batch(8)
    target = torch.tensor([-5., 0., 5., 10., 15., 20., 30., 40.])
    y = AddNoise(color=color, seed=0, draw={'snr_db': target})(x, split_idx=0)
    assert (snr_db(x, y) - target).abs().max() < 0.5
    # random draws: every measured SNR lies in the range and they spread over it
    y = AddNoise(snr_db=(5, 30), color=color, seed=3)(batch(64), split_idx=0)
    s = snr_db(batch(64), y)
    assert s.min() > 4.5 and s.max() < 30.5 and s.std() > 4

def test_pink_noise_spectrum_falls():
    n = colored_noise((4, 1 << 15), 'pink', torch.Generator().manual_seed(0))
    p = torch.fft.rfft(n).abs().pow(2).mean(0)
    f = torch.fft.rfftfreq(1 << 15)
    lo, hi = p[(f > 0.01) & (f < 0.02)].mean(), p[(f > 0.2) & (f < 0.4)].mean()  # 1/f: about 20x more power per bin at 1/20 the freq
    assert 10 < lo / hi < 40 and torch.allclose(n.pow(2).mean(-1), torch.ones(4))

def test_burst_noise_only_inside_bursts():
    x = batch(2)
    t = BurstNoise(n_bursts=2, max_len_s=0.05, snr_db=0, seed=0, draw={'start': [[100, 5000], [0, 12000]], 'width': [[50, 800], [10, 400]]})
    d = (t(x, split_idx=0) - x).as_subclass(torch.Tensor)[:, 0]
    inside = torch.zeros(2, SR, dtype=torch.bool)
    for b, spans in enumerate([[(100, 50), (5000, 800)], [(0, 10), (12000, 400)]]):
        for s, w in spans: inside[b, s:s + w] = True
    assert (d[~inside] == 0).all() and (d[inside] != 0).all()
    rms = x.as_subclass(torch.Tensor).pow(2).mean((1, 2)).sqrt()  # burst level: the item's rms at 0 dB
    assert torch.allclose(d.pow(2).sum(1).div(inside.sum(1)).sqrt(), rms, rtol=0.2)
    w = BurstNoise(n_bursts=3, max_len_s=0.01, seed=0)(batch(16), split_idx=0) - batch(16)
    assert ((w != 0).sum(-1) <= 3 * 160).all()

def test_bandstop_removes_band_only():
    x = batch(3)
    lo, w = torch.tensor([500., 2000., 6000.]), torch.tensor([300., 1000., 150.])
    y = BandStop(draw={'low_hz': lo, 'width_hz': w}, seed=0)(x, split_idx=0)
    for b in range(3):
        (X, f), (Y, _) = spectrum(x[b, 0]), spectrum(y[b, 0])
        band = (f >= lo[b]) & (f <= lo[b] + w[b])
        assert Y[band].max() < 1e-3 * X[band].mean()  # gone
        assert torch.allclose(Y[~band], X[~band], rtol=1e-3, atol=1e-3)  # everything else kept
    # random bands stay inside [min_hz, max_hz] and respect the widths
    t = BandStop(min_hz=1000, max_hz=3000, max_width_hz=500, min_width_hz=200, seed=0)
    lo, w = t.band(batch(64), SR)
    assert (lo >= 1000).all() and (lo + w <= 3000 + 1e-3).all() and (w >= 200).all() and (w <= 500).all()

def test_distortion_keeps_peak_adds_harmonics():
    x = tone(440, b=3)
    y = Distortion(draw={'gain_db': [0., 10., 20.]}, seed=0)(x, split_idx=0)
    assert torch.allclose(y.abs().amax((-2, -1)), x.abs().amax((-2, -1)), rtol=1e-5)
    X, f = spectrum(x[0, 0])
    h3 = [float(spectrum(y[b, 0])[0][(f - 1320).abs().argmin()] / spectrum(y[b, 0])[0][(f - 440).abs().argmin()]) for b in range(3)]
    assert X[(f - 1320).abs().argmin()] < 1e-3 * X.max()  # the clean tone has no third harmonic
    assert 0.01 < h3[0] < h3[1] < h3[2]  # more drive, more third harmonic

@pytest.mark.parametrize('new_sr,f0,fa', [(4000, 3000, 1000), (5000, 3000, 2000), (6000, 5000, 1000)])
def test_alias_folds_tone(new_sr, f0, fa):
    y = Alias(min_sr=2000, max_sr=8000, draw={'sr': new_sr}, seed=0)(tone(f0), split_idx=0)
    Y, f = spectrum(y[0, 0])
    below = f < new_sr / 2
    assert abs(float(f[below][Y[below].argmax()]) - fa) <= 2  # the strongest component under the new Nyquist is the alias
    assert Y[(f - fa).abs() < 3].max() > 0.2 * Y.max()

def test_alias_integer_factor_is_decimation():
    x = batch(1)
    y = Alias(min_sr=4000, max_sr=4000, seed=0)(x, split_idx=0)
    assert torch.equal(y[0, 0], x[0, 0, ::4].repeat_interleave(4))

@pytest.mark.parametrize('make,match', [
    (lambda: AddNoise(snr_db=(30, 5)), 'snr_db'), (lambda: AddNoise(snr_db=float('nan')), 'snr_db'), (lambda: AddNoise(color='blue'), 'color'),
    (lambda: AddNoise(p=1.5), '`p`'), (lambda: BurstNoise(n_bursts=0), 'n_bursts'), (lambda: BurstNoise(max_len_s=0), 'max_len_s'),
    (lambda: BandStop(min_hz=-1), 'min_hz'), (lambda: BandStop(min_hz=500, max_hz=400), 'max_hz'),
    (lambda: BandStop(max_width_hz=0), 'max_width_hz'), (lambda: BandStop(min_width_hz=2000, max_width_hz=1000), 'min_width_hz'),
    (lambda: Alias(min_sr=0), 'min_sr'), (lambda: Alias(min_sr=9000, max_sr=8000), 'min_sr'), (lambda: Distortion(gain_db=(0, 100)), 'gain_db'),
    (lambda: Distortion(draw=3), 'draw')])
def test_validation(make, match):
    with pytest.raises(ValueError, match=match): make()

def test_call_time_errors():
    with pytest.raises(ValueError, match='max_sr=8000.0 must not exceed'): Alias()(batch(2).clone().__class__(torch.zeros(2, 1, 100), sr=6000), split_idx=0)
    with pytest.raises(ValueError, match='expects audio'): AddNoise()(AudioTensor(torch.zeros(1, 1, 1, 100), sr=SR), split_idx=0)

def test_in_dataloaders(tiny_esc50):
    "In `batch_tfms` they run on the audio before MelSpec, on the training set only"
    from fastnorm.data import esc50_dls
    from fastnorm.spec import TensorSpec, mel_frequencies
    dls = esc50_dls(tiny_esc50, bs=4, sr=8000, batch_tfms=[BandStop(min_hz=100, max_hz=3000, min_width_hz=2000, max_width_hz=2000, seed=0)],
                    num_workers=0, progress=False)
    names = [type(t).__name__ for t in dls.train.after_batch.fs]
    assert names.index('BandStop') < names.index('MelSpec')
    (xb, _), (vb, _) = dls.train.one_batch(), dls.valid.one_batch()
    assert isinstance(xb, TensorSpec) and torch.isfinite(xb).all()
    f = torch.tensor(mel_frequencies(xb.cfg))
    band = (f > 1150) & (f < 1950)  # inside every drawn band: low edges lie in [100, 1000] Hz, widths are 2000 Hz
    band_db = lambda b: b.as_subclass(torch.Tensor)[:, :, band].mean((1, 2, 3))
    assert (band_db(xb) < -80).all() and (band_db(vb) > -60).all()  # measured: about -96 dB on train, -22 to -40 dB on valid

def test_band_stop_rejects_nan_and_checks_widths():
    with pytest.raises(ValueError, match=r'`min_hz` must be a finite number >= 0 \(nan given\)'):
        BandStop(min_hz=float('nan'))
    with pytest.raises(ValueError, match=r'`min_width_hz` must be a finite number in \[0, 1000\] \(2000.0 given\)'):
        BandStop(min_width_hz=2000.)
    with pytest.raises(ValueError, match=r"`color` must be one of \('white', 'pink'\) \('red' given\)"): AddNoise(color='red')
