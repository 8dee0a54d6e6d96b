import math
import numpy as np, pandas as pd, pytest, soundfile as sf, torch
from fastnorm.audio import AudioTensor
from fastnorm.noise import noise_files, NoiseClips
from fastnorm.waveaug import AddNoise, BurstNoise, Distortion

SR = 8000

def snr_db(clean, noisy, lengths):
    "Measured SNR of each item over its own samples, in float64"
    c = clean.as_subclass(torch.Tensor).double()
    d = noisy.as_subclass(torch.Tensor).double() - c
    ratio = lambda b, l: float(c[b, :, :l].pow(2).sum() / d[b, :, :l].pow(2).sum())
    return torch.tensor([10 * math.log10(ratio(b, l)) for b, l in enumerate(lengths.tolist())])

def padded(lengths, n=None, c=1, seed=0):
    "A padded batch of noise-like items with `lengths`, zeros after them"
    n = n or int(max(lengths))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), c, n, generator=g) * torch.linspace(0.05, 1, len(lengths))[:, None, None]
    L = torch.tensor(lengths)
    return AudioTensor(x * (torch.arange(n) < L[:, None])[:, None], sr=SR, lengths=L)

@pytest.fixture(scope='module')
def plain_noise(tmp_path_factory):
    "A plain folder of 6 noise clips of different lengths (two in a subfolder), one of them with silence at both ends"
    d = tmp_path_factory.mktemp('noise')
    (d/'sub').mkdir()
    rng = np.random.default_rng(0)
    for i, n in enumerate([4000, 9000, 700, 12000, 5000, 3000]):
        x = rng.standard_normal(n).astype(np.float32) * 0.1
        if i == 0: x = np.concatenate([np.zeros(500, np.float32), x, np.zeros(300, np.float32)])
        sf.write(d/('sub' if i > 3 else '.')/f'n{i}.wav', x, SR)
    return d

def test_esc50_split_by_fold(tiny_esc50):
    train, test, every = (noise_files(tiny_esc50, s) for s in ('train', 'test', 'all'))
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')
    fold5 = {str(tiny_esc50/'audio'/f) for f in df[df.fold == 5].filename}
    assert set(test) == fold5 and not set(train) & set(test) and sorted(train + test) == every
    assert set(noise_files(tiny_esc50, 'test', test_folds=(4, 5))) > fold5
    one = noise_files(tiny_esc50, 'train', per_class=1, seed=3)  # the AVMNIST recipe: one clip per category
    cats = df.set_index('filename').loc[[f.split('/')[-1] for f in one], 'category']
    assert len(one) == 4 and sorted(cats) == sorted(df.category.unique()) and set(one) <= set(train)
    assert one == noise_files(tiny_esc50, 'train', per_class=1, seed=3)
    with pytest.raises(ValueError, match=r'fold\(s\) \[9\]'): noise_files(tiny_esc50, 'test', test_folds=(9,))

def test_plain_folder_split_is_seeded_and_disjoint(plain_noise):
    every = noise_files(plain_noise)
    assert len(every) == 6 and any('/sub/' in f for f in every)
    for seed in (0, 1, 2):
        tr = noise_files(plain_noise, 'train', seed=seed)
        te = noise_files(plain_noise, 'test', seed=seed, test_frac=0.2)
        assert len(te) == 1 and len(tr) == 5 and sorted(tr + te) == every
    assert len({tuple(noise_files(plain_noise, 'test', seed=s)) for s in range(10)}) > 1
    with pytest.raises(ValueError, match='per_class'): noise_files(plain_noise, per_class=1)
    with pytest.raises(ValueError, match="`split`"): noise_files(plain_noise, 'valid')

def test_noiseclips_loads_trims_and_errors(plain_noise, tmp_path):
    nc = NoiseClips(plain_noise, sr=SR)
    assert len(nc) == 6 and nc.lengths.tolist() == [4000, 9000, 700, 12000, 5000, 3000]  # n0: 800 silent samples off
    assert nc.clips.shape == (6, 12000) and NoiseClips(plain_noise, sr=4000).lengths[1] == 4500  # resampled
    bad = tmp_path/'bad'
    bad.mkdir()
    (bad/'junk.wav').write_bytes(b'not audio at all')
    sf.write(bad/'silent.wav', np.zeros(800, np.float32), SR)
    with pytest.raises(ValueError, match=r'no readable, non-silent audio among its 2 all file\(s\)'):
        NoiseClips(bad, sr=SR)
    sf.write(bad/'ok.wav', np.ones(800, np.float32), SR)
    with pytest.warns(UserWarning, match='skipped 2 of 3'): assert len(NoiseClips(bad, sr=SR)) == 1
    (tmp_path/'empty').mkdir()
    with pytest.raises(ValueError, match='holds no audio files'): NoiseClips(tmp_path/'empty', sr=SR)
    with pytest.raises(FileNotFoundError, match='not found'): NoiseClips(tmp_path/'nowhere', sr=SR)
    with pytest.raises(ValueError, match='`sr`'): NoiseClips(plain_noise, sr=0)

def test_take_crops_or_loops(plain_noise):
    nc = NoiseClips(plain_noise, sr=SR)
    idx, lengths = torch.tensor([3, 2, 1]), torch.tensor([3000, 2000, 9000])
    out = nc.take(idx, lengths, torch.tensor([0.5, 0.9, 0.99]), 9500)
    c = nc.clips
    assert torch.equal(out[0, :3000], c[3, 4500:7500]) and (out[0, 3000:] == 0).all()  # crop at 0.5 of the 9001 offsets
    assert torch.equal(out[1, :2000], c[2, torch.arange(2000) % 700]) and (out[1, 2000:] == 0).all()  # looped
    assert torch.equal(out[2, :9000], c[1, :9000])  # exactly as long: the only offset is 0

@pytest.mark.parametrize('recorded', [True, False], ids=['recorded', 'coloured'])
def test_addnoise_exact_snr_on_padded_batch(plain_noise, recorded):
    "The SNR on each item's own samples is the one asked for (to 1e-6 dB), the padding stays as it was"
    lengths = [12000, 5000, 9000, 1000, 7000]
    x = padded(lengths, n=12500, c=2)
    target = torch.tensor([-5., 0., 3., 5., 10.])
    noise = NoiseClips(plain_noise, sr=SR) if recorded else None
    t = AddNoise(noise=noise, color='pink', seed=0, draw={'snr_db': target})
    y = t(x, split_idx=0)
    assert (snr_db(x, y, x.lengths) - target).abs().max() < 1e-6
    assert torch.equal(y[..., 12000:], x[..., 12000:]) and torch.equal(y[1, :, 5000:], x[1, :, 5000:])
    assert y.lengths is x.lengths or torch.equal(y.lengths, x.lengths)
    if recorded:  # each item's noise is a stretch of its clip: the same on both channels, proportional to the clip
        pins = {'clip': [1, 2, 3, 1, 0], 'offset': [0., 0., 0., .5, 0.]}
        y = AddNoise(snr_db=0., noise=noise, seed=0, draw=pins)(x, split_idx=0)
        d = (y - x).as_subclass(torch.Tensor)
        assert torch.allclose(d[:, 0], d[:, 1], atol=1e-6)
        seg = noise.clips[2, torch.arange(5000) % 700]
        assert torch.allclose(d[1, 0, :5000] / d[1, 0, :5000].abs().max(), seg / seg.abs().max(), atol=1e-5)

def test_addnoise_recorded_errors(plain_noise):
    nc = NoiseClips(plain_noise, sr=SR)
    with pytest.raises(ValueError, match='sr=8000 Hz but the audio is at sr=16000'):
        AddNoise(noise=nc, seed=0)(AudioTensor(torch.ones(1, 1, 100), sr=16000), split_idx=0)
    with pytest.raises(ValueError, match='NoiseClips'): AddNoise(noise=str(plain_noise))
    with pytest.raises(ValueError, match='`lengths` must hold 2 integers'):
        AddNoise(seed=0)(AudioTensor(torch.ones(2, 1, 100), sr=SR, lengths=torch.tensor([50, 200])), split_idx=0)

def test_burst_noise_stays_inside_lengths():
    x = padded([3000, 400, 2000], n=4000)
    y = BurstNoise(n_bursts=3, max_len_s=0.05, seed=0)(x, split_idx=0)
    d = (y - x).as_subclass(torch.Tensor)[:, 0]
    for b, l in enumerate(x.lengths.tolist()): assert (d[b, l:] == 0).all() and (d[b, :l] != 0).any()

def test_distortion_without_rescale_is_tanh():
    x = padded([1000, 800])
    y = Distortion(gain_db=20 * math.log10(2), rescale=False, seed=0)(x, split_idx=0).as_subclass(torch.Tensor)
    xt = x.as_subclass(torch.Tensor)
    assert torch.allclose(y, torch.tanh(2 * xt / xt.abs().amax((1, 2), keepdim=True)), atol=1e-6)
    assert torch.allclose(y.abs().amax((1, 2)), torch.full((2,), math.tanh(2.)))

def test_take_pads_the_clips_once_and_pickles_without_the_padding(plain_noise):
    "`take` grows zero padding in `clips` itself (no second copy on their device); a pickle holds the clips as loaded"
    import pickle
    nc = NoiseClips(plain_noise, sr=SR)
    loaded = nc.clips.clone()
    out = nc.take(torch.tensor([0, 1]), torch.tensor([500, 800]), torch.tensor([.2, .7]), 20000)
    assert out.shape == (2, 20000) and nc.clips.shape[1] >= loaded.shape[1] + 20000
    assert torch.equal(nc.clips[:, :loaded.shape[1]], loaded) and not nc.clips[:, loaded.shape[1]:].any()
    assert nc._to('cpu') is nc.clips and not nc._on  # the CPU copy is the clips themselves
    back = pickle.loads(pickle.dumps(nc))
    assert torch.equal(back.clips, loaded) and torch.equal(back.take(torch.tensor([0, 1]), torch.tensor([500, 800]),
                                                                      torch.tensor([.2, .7]), 20000), out)

@pytest.mark.parametrize('call, name', [
    (lambda p: noise_files(p, 'test', test_frac=math.nan), 'test_frac'),
    (lambda p: noise_files(p, 'test', test_frac=1.), 'test_frac'),
    (lambda p: noise_files(p, per_class=math.nan), 'per_class'),
    (lambda p: NoiseClips(p, sr=math.nan), 'sr'),
    (lambda p: NoiseClips(p, sr=SR, silence_db=math.nan), 'silence_db'),
    (lambda p: NoiseClips(p, sr=SR, silence_db=0.), 'silence_db'),
])
def test_bad_arguments_are_refused_naming_them(plain_noise, call, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\((nan|1.0|0.0) given\)"): call(plain_noise)
