"DeviceAugment: exact gains under pinned draws, the band limit's floor, the f_max warp, train/valid, seeding, errors"
import math, pickle
import numpy as np, pytest, torch
from fastnorm.spec import TensorSpec, SpecConfig, mel_frequencies
from fastnorm.devaug import DeviceAugment, device_gains, band_limit_gains, fmax_warp

CFG = SpecConfig(sr=16000, n_fft=512, hop_length=256, n_mels=32)
FREQS = torch.tensor(mel_frequencies(CFG), dtype=torch.float32)
OFF = dict(tilt=0., eq_gain=0., cutoff=math.inf, fmax_scale=1.)  # every effect pinned to "none"

def spec(B=4, F=32, T=20, seed=0, cfg=CFG):
    "A dB-like batch (about -60 to -20 dB) carrying its config"
    g = torch.Generator().manual_seed(seed)
    return TensorSpec(torch.rand(B, 1, F, T, generator=g) * 40 - 60, cfg=cfg)

def gain_of(tfm, x):
    "The change each row got `[B,F]`, for an augmentation that is a gain constant over time and channels"
    d = (tfm(x, split_idx=0) - x).as_subclass(torch.Tensor)
    torch.testing.assert_close(d, d[:, :1, :, :1].expand_as(d), atol=1e-4, rtol=0)  # really one [B,1,F,1] curve
    return d[:, 0, :, 0]

def test_tilt_adds_db_per_octave_around_f_ref():
    x = spec(B=2)
    got = gain_of(DeviceAugment(p=1., draw={**OFF, 'tilt': [3., -2.]}), x)
    octaves = torch.log2(FREQS / 1000.)
    torch.testing.assert_close(got, torch.stack([3 * octaves, -2 * octaves]), atol=1e-4, rtol=1e-5)
    assert float(got[0, -1]) > 8.  # the top row (about 7.4 kHz) rises by 3 dB x 2.9 octaves
    got500 = gain_of(DeviceAugment(p=1., f_ref=500., draw={**OFF, 'tilt': 3.}), x)
    torch.testing.assert_close(got500[0] - got[0], torch.full((32,), 3.), atol=1e-4, rtol=0)  # one octave lower pivot

def test_eq_bump_peaks_at_its_centre_with_its_gain():
    x = spec(B=2)
    d = {**OFF, 'eq_center': [[10 / 31], [25 / 31]], 'eq_width': [[0.1], [0.05]], 'eq_gain': [[6.], [-4.]]}
    got = gain_of(DeviceAugment(p=1., n_bumps=1, draw=d), x)
    assert got[0].argmax() == 10 and got[1].argmin() == 25
    torch.testing.assert_close(got[:, [10, 25]].diagonal(), torch.tensor([6., -4.]), atol=1e-4, rtol=0)
    # a Gaussian: one standard deviation (0.1 of 31 rows = 3.1 rows) away it is exp(-1/2) of the peak
    pos = torch.arange(32) / 31
    torch.testing.assert_close(got[0], 6 * torch.exp(-0.5 * ((pos - 10 / 31) / 0.1) ** 2), atol=1e-4, rtol=1e-5)

def test_pure_gain_functions():
    f = torch.tensor([250., 500., 1000., 2000., 4000.])
    g = device_gains(f, torch.tensor([2.]), torch.zeros(1, 0), torch.ones(1, 0), torch.zeros(1, 0))
    torch.testing.assert_close(g, torch.tensor([[-4., -2., 0., 2., 4.]]))
    b = band_limit_gains(f, torch.tensor([1000., math.inf]), rolloff_db=24.)
    torch.testing.assert_close(b, torch.tensor([[0., 0., 0., -24., -48.], [0., 0., 0., 0., 0.]]))

def test_band_limit_keeps_rows_below_the_cutoff_and_stops_at_the_floor():
    x = spec(B=3)
    cut = [2000., 3000., math.inf]
    y = DeviceAugment(p=1., band_rolloff_db=200., band_floor_db=30., draw={**OFF, 'cutoff': cut})(x, split_idx=0)
    xt, yt = x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)
    floor = xt.amax((1, 2, 3)) - 30
    for i, c in enumerate(cut):
        below = FREQS <= c
        assert torch.equal(yt[i, :, below], xt[i, :, below]), "rows below the cutoff must be untouched"
        above, was = yt[i, :, ~below], xt[i, :, ~below]
        assert (above <= was).all(), "attenuated"
        assert (above >= torch.minimum(was, floor[i]) - 1e-5).all(), "never below the floor (nor below where it was)"
    far = FREQS > 2000 * 2 ** 0.5  # half an octave up at 200 dB/octave: 100 dB down, so clamped to the floor
    assert torch.allclose(yt[0, :, far], torch.minimum(xt[0, :, far], floor[0]))
    assert (yt[0, :, far] == floor[0]).float().mean() > 0.5  # most of those rows were above it: now exactly on it
    assert torch.equal(yt[2], xt[2])

def test_band_limit_never_lifts_a_quiet_row():
    x = spec(B=1)
    x[0, 0, -4:] = -150.  # already far below the floor
    y = DeviceAugment(p=1., band_floor_db=30., draw={**OFF, 'cutoff': 1000.})(x, split_idx=0)
    assert torch.equal(y[0, 0, -4:], x[0, 0, -4:])

@pytest.mark.parametrize('mel_scale', ['slaney', 'htk'])
def test_fmax_warp_resamples_rows_along_mel(mel_scale):
    import librosa
    cfg = CFG.replace(mel_scale=mel_scale, f_min=50.)
    x, scales = spec(B=3, T=5, cfg=cfg), [1., .9, 1.1]
    assert torch.equal(fmax_warp(x, cfg, torch.ones(3)), x)
    y = fmax_warp(x, cfg, torch.tensor(scales)).as_subclass(torch.Tensor)
    # the reference: each new row's mel centre, under the new top frequency, read off the old rows by interpolation
    mel = lambda f: float(librosa.hz_to_mel(f, htk=mel_scale == 'htk'))
    lo, hi = mel(cfg.f_min), mel(cfg.fmax)
    for i, s in enumerate(scales):
        src = (np.linspace(lo, mel(cfg.fmax * s), 34)[1:-1] - lo) / (hi - lo) * 33 - 1
        want = np.stack([np.interp(src, np.arange(32), x[i, 0, :, t].numpy()) for t in range(5)], -1)
        np.testing.assert_allclose(y[i, 0].numpy(), want, atol=1e-3)
    assert not torch.allclose(y[1], x[1].as_subclass(torch.Tensor))

def test_p_zero_and_validation_are_identity():
    x = spec()
    x0 = x.clone()
    assert torch.equal(DeviceAugment(p=0., p_band=1.)(x, split_idx=0), x)
    everything = DeviceAugment(p=1., p_band=1., band_min_hz=500.)
    assert everything(x, split_idx=1) is x, "validation batches pass through untouched"
    y = everything(x, split_idx=0)
    assert isinstance(y, TensorSpec) and y.cfg == CFG and y.dtype == x.dtype and y.shape == x.shape
    assert not torch.equal(y, x) and torch.equal(x, x0), "applies on the training set, without mutating its input"
    assert everything.split_idx == 0  # what `to_onnx` reads to skip train-only transforms
    plain = torch.rand(2, 1, 32, 5)
    assert everything(plain, split_idx=0) is plain  # only TensorSpec is augmented

def test_per_item_p_and_each_effect_probability():
    x = spec(B=400, T=2)
    y = DeviceAugment(p=0.5, seed=0)(x, split_idx=0)
    changed = (y != x).flatten(1).any(1).float().mean()
    assert 0.4 < changed < 0.6
    band = DeviceAugment(p=1., p_tilt=0., p_eq=0., p_fmax=0., p_band=0.25, band_min_hz=1000., seed=0)
    top = (band(x, split_idx=0) != x)[:, 0, -1, 0].float().mean()  # the top row changes only under a band limit
    assert 0.15 < top < 0.35

def test_drawn_parameters_cover_their_ranges():
    x, top = spec(B=2000, T=1), float(FREQS[-1])
    d = DeviceAugment(p_band=.25, band_min_hz=2000., seed=0).params(x, CFG)
    assert d['tilt'].abs().max() <= 3 and d['tilt'].min() < -2.9 and d['tilt'].max() > 2.9
    assert d['eq_gain'].shape == (2000, 2) and d['eq_gain'].abs().max() <= 6 and d['eq_gain'].abs().max() > 5.9
    assert d['eq_width'].min() >= .03 and d['eq_width'].max() <= .12
    assert d['eq_center'].min() >= 0 and d['eq_center'].max() < 1
    limited = d['cutoff'].isfinite()
    assert 0.2 < limited.float().mean() < 0.3 and d['cutoff'][~limited].eq(math.inf).all()
    assert d['cutoff'][limited].min() >= 2000 and d['cutoff'][limited].max() <= top
    assert (d['fmax_scale'] - 1).abs().max() <= .05 and (d['fmax_scale'] - 1).abs().max() > .049
    off = DeviceAugment(p_tilt=0., p_eq=0., p_fmax=0., seed=0).params(x, CFG)
    assert off['tilt'].eq(0).all() and off['eq_gain'].eq(0).all() and off['fmax_scale'].eq(1).all()

def test_keeps_half_precision():
    x = spec()
    h = DeviceAugment(p=1., p_band=1., seed=0)(TensorSpec(x.as_subclass(torch.Tensor).half(), cfg=CFG), split_idx=0)
    assert h.dtype == torch.float16 and torch.isfinite(h).all() and not torch.equal(h, x.half())

def test_seeded_reproducible_and_pickles():
    x = spec(B=8)
    a, b = DeviceAugment(p=1., p_band=.5, seed=0), DeviceAugment(p=1., p_band=.5, seed=0)
    assert torch.equal(a(x, split_idx=0), b(x, split_idx=0)) and torch.equal(a(x, split_idx=0), b(x, split_idx=0))
    assert not torch.equal(DeviceAugment(p=1., seed=1)(x, split_idx=0), DeviceAugment(p=1., seed=2)(x, split_idx=0))
    c = pickle.loads(pickle.dumps(DeviceAugment(p=1., seed=3)))
    assert torch.equal(c(x, split_idx=0), DeviceAugment(p=1., seed=3)(x, split_idx=0))
    torch.manual_seed(4)
    r1 = DeviceAugment(p=1.)(x, split_idx=0)
    torch.manual_seed(4)
    assert torch.equal(r1, DeviceAugment(p=1.)(x, split_idx=0))  # no seed: the global torch RNG (`set_seed`)

def test_batch_equals_items_given_the_same_parameters():
    x = spec(B=3)
    d = dict(tilt=[2., -1., 0.], eq_center=[[.2, .7], [.5, .1], [.9, .3]], eq_width=[[.05, .1], [.1, .03], [.08, .08]],
             eq_gain=[[3., -2.], [0., 5.], [-6., 1.]], cutoff=[2500., math.inf, 4000.], fmax_scale=[1., .95, 1.04])
    tf = lambda dd: DeviceAugment(p=1., draw=dd)
    yb = tf(d)(x, split_idx=0)
    for i in range(3):
        yi = tf({k: [v[i]] for k, v in d.items()})(x[i:i + 1], split_idx=0)
        torch.testing.assert_close(yb[i:i + 1].as_subclass(torch.Tensor), yi.as_subclass(torch.Tensor))

def test_silent_spectrogram_stays_finite():
    for fill in (0., -100.):
        x = TensorSpec(torch.full((4, 2, 32, 6), fill), cfg=CFG)
        y = DeviceAugment(p=1., p_band=1., band_min_hz=200., seed=0)(x, split_idx=0)
        assert torch.isfinite(y).all()

def test_config_comes_from_the_batch_or_the_argument():
    lin = SpecConfig(sr=8000, n_fft=64, n_mels=None)  # 33 linear rows, the first at 0 Hz
    y = DeviceAugment(p=1., p_band=1., seed=0)(spec(F=33, cfg=lin), split_idx=0)
    assert torch.isfinite(y).all() and y.cfg == lin
    bare = TensorSpec(torch.rand(4, 1, 32, 20) * 40 - 60)  # no `cfg`
    assert torch.isfinite(DeviceAugment(p=1., cfg=CFG, seed=0)(bare, split_idx=0)).all()
    with pytest.raises(ValueError, match=r"needs the spectrograms' settings .* give `cfg=SpecConfig"):
        DeviceAugment(p=1.)(bare, split_idx=0)
    with pytest.raises(ValueError, match=r'needs dB spectrograms \(cfg.db=True'):
        DeviceAugment(p=1.)(spec(cfg=CFG.replace(db=False)), split_idx=0)
    with pytest.raises(ValueError, match=r"cfg has 32 rows but the batch has 16"):
        DeviceAugment(p=1.)(spec(F=16), split_idx=0)
    with pytest.raises(ValueError, match=r'expects a batch `\[B,C,F,T\]`'): DeviceAugment()(spec()[0], split_idx=0)

@pytest.mark.parametrize('kwargs,match', [
    (dict(p=1.5), r'`p` must be a finite number in \[0, 1\] \(1.5 given\)'),
    (dict(p_band=-.1), r'`p_band` must be a finite number in \[0, 1\]'),
    (dict(p_tilt=2), r'`p_tilt` must be a finite number in \[0, 1\]'),
    (dict(tilt_db=-1.), r'`tilt_db` must be a finite number >= 0 \(-1.0 given\)'),
    (dict(eq_db=float('nan')), r'`eq_db` must be a finite number >= 0 \(nan given\)'),
    (dict(n_bumps=1.5), r'`n_bumps` must be an integer >= 0 \(1.5 given\)'),
    (dict(eq_width=(.2, .1)), r'`eq_width` must be a number or a \(low, high\) pair'),
    (dict(eq_width=0.), r'`eq_width` must be above 0 \(0.0 given\)'),
    (dict(band_min_hz=-5.), r'`band_min_hz` must be a finite number >= 0'),
    (dict(band_rolloff_db=0.), r'`band_rolloff_db` must be a positive number \(0.0 given\)'),
    (dict(band_floor_db=float('inf')), r'`band_floor_db` must be a positive number'),
    (dict(fmax_jitter=1.), r'`fmax_jitter` must be a finite number in \[0, 1\) \(1.0 given\)'),
    (dict(f_ref=0.), r'`f_ref` must be a positive number'),
    (dict(cfg='quick'), r'`cfg` must be a SpecConfig or None \(str given\)'),
])
def test_errors_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match): DeviceAugment(**kwargs)

def test_repr_lists_the_settings():
    r = repr(DeviceAugment(p_band=.3, fmax_jitter=.02))
    assert r.startswith('DeviceAugment(p=0.5, tilt_db=3.0') and 'p_band=0.3' in r and 'fmax_jitter=0.02' in r

def test_in_a_datablock_train_only(tiny_esc50):
    from fastnorm.data import esc50_dls
    dls = esc50_dls(tiny_esc50, bs=4, sr=8000, num_workers=0, progress=False,
                    batch_tfms=[DeviceAugment(p=1., p_band=1., band_min_hz=1000., seed=0)])
    names = [type(t).__name__ for t in dls.train.after_batch.fs]
    assert names.index('MelSpec') < names.index('DeviceAugment')
    plain = esc50_dls(tiny_esc50, bs=4, sr=8000, num_workers=0, progress=False)
    (xt, _), (xv, _), (pv, _) = dls.train.one_batch(), dls.valid.one_batch(), plain.valid.one_batch()
    assert isinstance(xt, TensorSpec) and xt.cfg is not None and torch.isfinite(xt).all()
    assert torch.equal(xv, pv), "a valid DataLoader leaves the batch as it was"
    f = torch.tensor(mel_frequencies(xt.cfg))
    top = xt.as_subclass(torch.Tensor)[:, :, f > 3500].mean()  # above every cutoff (at most 4 kHz) at 48 dB/octave
    assert top < pv.as_subclass(torch.Tensor)[:, :, f > 3500].mean()
