import math
import numpy as np, torch, pytest, soundfile as sf
from fastnorm.audio import *
from conftest import EXAMPLES, needs

def write(path, x, sr, subtype=None):
    sf.write(path, x, sr, subtype=subtype); return path

def test_create_keeps_sr_through_slicing_and_ops(tmp_path):
    f = write(tmp_path/'a.wav', np.sin(np.arange(8000)/10).astype(np.float32), 8000)
    a = AudioTensor.create(f)
    assert a.shape == (1, 8000) and a.dtype == torch.float32 and a.sr == 8000 and a.duration == 1.0
    b = (a[:, :100] * 2)
    assert isinstance(b, AudioTensor) and b.sr == 8000

def test_stereo_is_downmixed(tmp_path):
    x = np.stack([np.ones(1000), -np.ones(1000)*.5], 1).astype(np.float32)
    f = write(tmp_path/'st.wav', x, 8000, 'FLOAT')
    a = AudioTensor.create(f)
    assert a.shape == (1, 1000) and torch.allclose(a, torch.full((1, 1000), .25))
    assert AudioTensor.create(f, mono=False).shape == (2, 1000)

def test_other_rate_is_resampled(tmp_path):
    f = write(tmp_path/'r.wav', np.random.default_rng(0).standard_normal(22050).astype(np.float32)*.1, 22050, 'FLOAT')
    a = AudioTensor.create(f, sr=16000)
    assert a.sr == 16000 and a.shape == (1, 16000)

def test_missing_file():
    with pytest.raises(FileNotFoundError, match='nope.wav'): AudioTensor.create('nope.wav')

def test_corrupt_and_empty_files(tmp_path):
    bad = tmp_path/'bad.wav'; bad.write_bytes(b'RIFF not really a wav')
    with pytest.raises(AudioLoadError, match='Could not decode.*bad.wav'): load_audio(bad)
    empty = write(tmp_path/'empty.wav', np.zeros(0, np.float32), 8000)
    with pytest.raises(AudioLoadError, match='empty.wav is empty'): load_audio(empty)

def test_nan_samples_are_an_error(tmp_path):
    x = np.zeros(100, np.float32); x[3] = np.nan; x[7] = np.inf
    f = write(tmp_path/'nan.wav', x, 8000, 'FLOAT')
    with pytest.raises(AudioLoadError, match='nan.wav contains 2 NaN or Inf'): load_audio(f)

def test_audio_normalize_values_and_silence():
    x = AudioTensor(torch.stack([torch.linspace(-3, 5, 1000)[None], torch.zeros(1, 1000), torch.full((1, 1000), .7)]), sr=8000)
    y = AudioNormalize()(x)
    assert isinstance(y, AudioTensor) and y.sr == 8000
    assert torch.allclose(y[0].mean(), torch.tensor(0.), atol=1e-6) and torch.allclose(y[0].std(unbiased=False), torch.tensor(1.), atol=1e-5)
    assert (y[1] == 0).all() and (y[2] == 0).all() and torch.isfinite(y).all()

def test_croppad_train_random_valid_centred():
    x = AudioTensor(torch.arange(100.)[None], sr=10)
    cp = AudioCropPad(5.)  # 50 samples
    v = cp(x, split_idx=1)
    assert v.shape == (1, 50) and v[0, 0] == 25 and v.sr == 10
    starts = {int(cp(x, split_idx=0)[0, 0]) for _ in range(50)}
    assert len(starts) > 5 and all(0 <= s <= 50 for s in starts)
    short = cp(AudioTensor(torch.ones(1, 20), sr=10), split_idx=1)
    assert short.shape == (1, 50) and short[0, :20].eq(1).all() and short[0, 20:].eq(0).all()
    with pytest.raises(ValueError, match='duration'): AudioCropPad(0)

def test_show_waveform():
    ax = AudioTensor(torch.sin(torch.arange(800.)/5)[None], sr=8000).show(title='sine')
    assert ax.get_xlabel() == 'time (s)' and ax.get_title() == 'sine' and ax.get_xlim()[1] == pytest.approx(799/8000)

@needs(EXAMPLES)
def test_real_ogg_loads():
    a = AudioTensor.create(EXAMPLES/'sorohanro_-_solo-trumpet-06.ogg')
    assert a.sr == 22050 and 5.2 < a.duration < 5.4 and a.abs().max() > .1

def test_audio_normalize_makes_spectrograms_gain_invariant():
    from fastnorm.spec import MelSpec
    x = AudioTensor(torch.randn(1, 1, 4000), sr=8000)
    ms, norm = MelSpec(sr=8000, n_fft=256, n_mels=20), AudioNormalize()
    quiet = AudioTensor(x * 10**(-35/20), sr=8000)
    assert (ms(x) - ms(quiet)).mean() == pytest.approx(35, abs=.01)  # a 35 dB gain shifts every bin by 35 dB
    torch.testing.assert_close(ms(norm(x)), ms(norm(quiet)), atol=1e-3, rtol=0)

@pytest.mark.parametrize('channels', [1, 2])
def test_pcm16_wav_read_from_its_bytes_equals_soundfile(tmp_path, channels, monkeypatch):
    """Plain 16-bit WAVs skip soundfile's setup: the numbers must be soundfile's, bit for bit, and the file's rate; any
    other file is read by soundfile, once"""
    x = np.random.default_rng(0).integers(-32768, 32768, (999, channels)).astype(np.int16)
    f = write(tmp_path/'pcm.wav', x, 11025, 'PCM_16')
    read, by_soundfile = sf.read, []
    ref, ref_sr = read(str(f), dtype='float32', always_2d=True)
    monkeypatch.setattr(sf, 'read', lambda path, *a, **k: by_soundfile.append(path) or read(path, *a, **k))
    got, sr = load_audio(f, mono=False)
    assert sr == ref_sr == 11025 and got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(ref.T.copy()))
    assert by_soundfile == []  # read from its bytes
    for subtype in ('PCM_24', 'FLOAT', 'PCM_U8'):  # anything else goes through soundfile, with the same result
        g = write(tmp_path/f'{subtype}.wav', x / 32768., 11025, subtype)
        ref = read(str(g), dtype='float32', always_2d=True)[0]
        assert torch.equal(load_audio(g, mono=False)[0], torch.from_numpy(ref.T.copy())) and by_soundfile == [str(g)]
        by_soundfile.clear()
    cut = tmp_path/'cut.wav'
    cut.write_bytes(f.read_bytes()[:-10])  # a truncated data chunk: soundfile decides what is readable
    assert load_audio(cut)[0].shape[-1] == sf.info(str(cut)).frames and by_soundfile == [str(cut)]

@pytest.mark.parametrize('call, name', [
    (lambda f: load_audio(f, sr=math.nan), 'sr'),
    (lambda f: AudioTensor.create(f, sr=math.nan), 'sr'),
    (lambda f: AudioCropPad(math.nan), 'duration'),
    (lambda f: AudioCropPad(1., pad='start'), 'pad'),
    (lambda f: AudioNormalize(eps=math.nan), 'eps'),
    (lambda f: AudioBlock(duration=math.nan), 'duration'),
])
def test_bad_arguments_are_refused_naming_them(tmp_path, call, name):
    sf.write(tmp_path/'a.wav', np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\((nan|'start') given\)"): call(tmp_path/'a.wav')
