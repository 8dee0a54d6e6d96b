import math
import numpy as np, pytest, torch
from fastnorm.audio import AudioTensor
from fastnorm.spec import SpecConfig, TensorSpec
from fastnorm.avmnist.schemes import SCHEMES, Scheme, KeepBands, scheme_image, show_schemes
from fastnorm.avmnist.render import specgram_db, resize_weights, resize_frames, db_to_image, frame_counts

SR = 8000

def batch(lengths=(4000, 2500, 3300), seed=0):
    "Padded noise-like items (a tone and noise) with `lengths`"
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    t = torch.arange(n) / SR
    x = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.1 * torch.randn(len(lengths), 1, n, generator=g)
    L = torch.tensor(lengths)
    return AudioTensor(x * (torch.arange(n) < L[:, None])[:, None], sr=SR, lengths=L)

def measured_snr(x, y):
    xt = x.as_subclass(torch.Tensor).double()
    d = y.as_subclass(torch.Tensor).double() - xt
    ratio = lambda b, l: float(xt[b, :, :l].pow(2).sum() / d[b, :, :l].pow(2).sum())
    return torch.tensor([10 * math.log10(ratio(b, l)) for b, l in enumerate(x.lengths.tolist())])

def spec_batch(b=3, f=129, w=112, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = SpecConfig(sr=SR, n_fft=256, hop_length=128, n_mels=None, center=False)
    return TensorSpec(-60 + 20 * torch.rand(b, 1, f, w, generator=g), cfg=cfg)

def test_scheme_table():
    assert list(SCHEMES) == ['clean', 'extreme_noise', 'multi_band', 'burst_noise', 'aliased', 'distorted']
    with pytest.raises(ValueError, match=r"`scheme` must be one of \(.*'burst_noise'.*\) \('loud' given\)"):
        Scheme('loud', SR)
    with pytest.raises(ValueError, match='`color`'): Scheme('clean', SR, color='blue')

@pytest.mark.parametrize('name,snr', [('extreme_noise', 0.), ('burst_noise', 3.)])
def test_noise_schemes_snr_and_time_masks(name, snr):
    x = batch()
    sc = Scheme(name, SR, seed=0)
    assert measured_snr(x, sc.wave(x)).sub(snr).abs().max() < 1e-5
    s = spec_batch()
    out = sc.spec(s).as_subclass(torch.Tensor)
    n, frac = SCHEMES[name]['time_masks']
    floor = s.as_subclass(torch.Tensor).amin((1, 2, 3))
    masked = (out == floor[:, None, None, None]).all(-2)[:, 0]  # `[B,W]` columns at the floor
    w = round(frac * 112)
    assert ((masked.sum(-1) >= w) & (masked.sum(-1) <= n * w)).all()  # n masks of exactly w columns, which may overlap
    kept = lambda a: a.as_subclass(torch.Tensor).transpose(-1, -2)[~masked[:, None]]
    assert torch.equal(kept(out), kept(s))  # every other column as it was

def test_multi_band_keeps_bands_and_masks_bins():
    sc = Scheme('multi_band', SR, seed=0)
    x = batch()
    assert torch.equal(sc.wave(x), x)  # nothing on the waveform
    s = spec_batch()
    out = sc.spec(s).as_subclass(torch.Tensor)
    floor = s.as_subclass(torch.Tensor).amin((1, 2, 3))
    rows = (out == floor[:, None, None, None]).all(-1)[:, 0]  # `[B,F]` rows at the floor
    f = torch.arange(129) * SR / 256
    kept = ((f >= 50) & (f <= 1000)) | ((f >= 2000) & (f <= 3500))
    assert rows[:, ~kept].all()  # every row outside 50-1000 Hz and 2-3.5 kHz is gone
    extra = (rows & kept).sum(-1)  # inside the bands only the frequency masks remove rows: 3 of 26 bins (20% of 129)
    assert (extra <= 3 * 26).all() and (extra > 0).any()
    keep = ~rows[:, None, :, None].expand_as(out)
    assert torch.equal(out[keep], s.as_subclass(torch.Tensor)[keep])
    # in the image, the removed bands are white
    img, _ = scheme_image(batch(), Scheme('multi_band', SR, seed=1))
    rows_img = torch.arange(112).flip(0).float() * (SR / 2) / 111  # row 0 is the top: the highest frequency
    assert (img[:, (rows_img > 1150) & (rows_img < 1850)] == 255).all() and (img[:, rows_img > 3700] == 255).all()

def test_aliased_is_decimation_and_one_frequency_mask():
    x = batch()
    y = Scheme('aliased', SR, seed=0).wave(x)
    xt, yt = x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor)
    for b, l in enumerate(x.lengths.tolist()):
        assert torch.equal(yt[b, 0, :l], xt[b, 0, ::4].repeat_interleave(4)[:l])  # down by 4 and held back up
        assert (yt[b, 0, l:] == 0).all()
    s = spec_batch()
    out = Scheme('aliased', SR, seed=0).spec(s).as_subclass(torch.Tensor)
    rows = (out == s.as_subclass(torch.Tensor).amin((1, 2, 3))[:, None, None, None]).all(-1)[:, 0]
    assert (rows.sum(-1) == round(.3 * 129)).all()  # one mask of exactly 30% of the bins
    r = rows.int().argmax(-1)
    assert all(rows[b, r[b]:r[b] + 39].all() for b in range(3))  # contiguous

def test_distorted_noise_then_tanh():
    x = batch()
    y = Scheme('distorted', SR, seed=0).wave(x).as_subclass(torch.Tensor)
    assert (y.abs() <= math.tanh(2.) + 1e-6).all()
    assert torch.allclose(y.abs().amax((1, 2)), torch.full((3,), math.tanh(2.)))  # the peak goes to tanh(2)
    # the same draws without the tanh: the SNR of the mix is 5 dB, and the output is tanh(2 mix / max|mix|)
    sc = Scheme('distorted', SR, seed=0)
    mix = sc.wave_tfms[0](x, split_idx=0)
    assert measured_snr(x, mix).sub(5.).abs().max() < 1e-5
    m = mix.as_subclass(torch.Tensor)
    assert torch.allclose(y, torch.tanh(2 * m / m.abs().amax((1, 2), keepdim=True)), atol=1e-6)

@pytest.mark.parametrize('name', list(SCHEMES))
def test_seeded_and_reproducible(name):
    x = batch()
    a, ya = scheme_image(x, Scheme(name, SR, seed=5))
    b, yb = scheme_image(x, Scheme(name, SR, seed=5))
    assert a.dtype == torch.uint8 and a.shape == (3, 112, 112) and torch.equal(a, b) and torch.equal(ya, yb)
    sc = Scheme(name, SR, seed=0)
    sc.reseed(5)
    assert torch.equal(scheme_image(x, sc)[0], a)
    if name != 'clean' and name != 'aliased': assert not torch.equal(scheme_image(x, Scheme(name, SR, seed=6))[0], a)

def test_image_matches_matplotlib_rendering():
    "A clean chirp drawn by the recipe's matplotlib figure and by scheme_image: the same picture, to a few grey levels"
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    t = np.arange(6000) / SR
    x = 0.5 * np.sin(2 * np.pi * (200 * t + 2500 * t ** 2)) + 0.01 * np.random.default_rng(0).standard_normal(6000)
    x = x.astype(np.float32)
    fig = plt.figure(figsize=(1.12, 1.12), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    ax.specgram(x, NFFT=256, Fs=SR, noverlap=128, cmap='gray_r')
    fig.canvas.draw()
    ref = np.asarray(fig.canvas.buffer_rgba())[..., 0].astype(float)
    plt.close(fig)
    img = scheme_image(AudioTensor(torch.from_numpy(x)[None, None], sr=SR), Scheme('clean', SR))[0][0]
    img = img.numpy().astype(float)
    assert np.corrcoef(ref.ravel(), img.ravel())[0, 1] > 0.98 and np.abs(ref - img).mean() < 8
    # rising: dark at the bottom left and at the top right
    assert img[-10:, :10].mean() < img[:10, :10].mean() and img[:10, -10:].mean() < img[-10:, -10:].mean()

def test_render_pieces():
    w = resize_weights(torch.tensor([112, 30, 200]), 112, 200)
    assert torch.allclose(w.sum(1), torch.ones(3, 112)) and (w[1, 30:] == 0).all() and (w[0, 112:] == 0).all()
    assert torch.allclose(w[0, :112], torch.eye(112), atol=1e-6)  # same size: the identity
    x = torch.arange(10.).reshape(1, 1, 1, 10)
    assert torch.allclose(resize_frames(x, torch.tensor([5]), 5), x[..., :5])
    assert frame_counts(torch.tensor([256, 384, 100, 4000])).tolist() == [1, 2, 1, 30]
    db = torch.tensor([[[[-10., -20.], [-30., -40.]]]])
    assert db_to_image(db).tolist() == [[[[170, 255], [0, 85]]]]  # loudest black, quietest white, rows flipped
    assert db_to_image(torch.zeros(1, 1, 2, 2)).eq(255).all()  # constant: white, as matplotlib draws it
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(4096) / SR)[None, None]
    s = specgram_db(tone, SR)
    assert s.shape == (1, 1, 129, 31) and s[0, 0, :, 5].argmax() == 32  # 1000 Hz is bin 1000 / (8000 / 256) = 32
    from matplotlib import mlab
    pxx, _, _ = mlab.specgram(tone[0, 0].numpy(), NFFT=256, Fs=SR, noverlap=128)
    ref = 10 * np.log10(np.maximum(pxx, 1e-30))
    near = ref > ref.max() - 80  # below that, float32 rounding of the tone's window leakage differs
    assert near.sum() > 200 and np.allclose(s[0, 0].numpy()[near], ref[near], atol=1e-2)  # matplotlib's own numbers

def test_keep_bands_validation_and_show():
    with pytest.raises(ValueError, match='`bands`'): KeepBands(((1000, 50),))
    with pytest.raises(ValueError, match='`bands`'): KeepBands(())
    fig = show_schemes(AudioTensor(batch()[0], sr=SR))
    assert len(fig.axes) == 2 * len(SCHEMES)
