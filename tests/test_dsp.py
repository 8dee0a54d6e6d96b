"The pure-torch front end (`fastnorm.dsp`) against librosa and SciPy, and against torchaudio where it loads"
import math
import numpy as np, pytest, torch
import scipy.fft, scipy.signal
from fastnorm.dsp import *
from fastnorm.audio import AudioTensor, load_audio
from fastnorm.spec import MelSpec, SpecConfig
from conftest import EXAMPLES, needs

librosa = pytest.importorskip('librosa')
TRUMPET, SPEECH = 'sorohanro_-_solo-trumpet-06.ogg', '198-209-0000.ogg'

def noise(*shape, seed=0): return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

def rel_rms(a, b):
    "Relative RMS error of `a` against the reference `b`"
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))

def torchaudio_or_skip():
    "torchaudio where it is installed and loads against this torch; else skip, saying why"
    try: import torchaudio
    except Exception as e:  # ImportError, or the RuntimeError of a CUDA build mismatch
        pytest.skip(f"torchaudio is not usable with torch {torch.__version__}: {type(e).__name__}: {str(e)[:120]}")
    return torchaudio

@pytest.mark.parametrize('mel_scale,norm', [('slaney', 'slaney'), ('htk', None), ('htk', 'slaney'), ('slaney', None)])
def test_mel_filterbank_matches_librosa(mel_scale, norm):
    ours = mel_filterbank(1025, 20., 11025., 80, 22050, norm=norm, mel_scale=mel_scale)
    ref = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=80, fmin=20., fmax=11025., htk=mel_scale == 'htk', norm=norm)
    assert ours.shape == (1025, 80) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.T.numpy(), ref, rtol=1e-5, atol=1e-7)

def test_mel_scale_round_trip_and_known_values():
    f = np.array([0., 440., 1000., 4000., 11025.])
    for scale in ('slaney', 'htk'): np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, atol=1e-9)
    assert hz_to_mel(1000., 'htk') == pytest.approx(999.9855, abs=1e-3)  # 2595 log10(1 + 1000/700)
    assert hz_to_mel(1000., 'slaney') == pytest.approx(15.)  # 1000 / (200/3): the linear part ends at 1 kHz

def test_bad_filterbank_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"`mel_scale` must be one of \('slaney', 'htk'\) \('mel' given\)"):
        mel_filterbank(257, 0., 8000., 40, 16000, mel_scale='mel')
    with pytest.raises(ValueError, match=r"`norm` must be one of .*\('area' given\)"):
        mel_filterbank(257, 0., 8000., 40, 16000, norm='area')
    with pytest.raises(ValueError, match=r'`f_max` must be a finite number in \(0, 8000\] \(9000.0 given\)'):
        mel_filterbank(257, 0., 9000., 40, 16000)
    with pytest.raises(ValueError, match=r'`f_max` must be a finite number in \(500, 8000\] \(400.0 given\)'):
        mel_filterbank(257, 500., 400., 40, 16000)
    with pytest.raises(ValueError, match=r'`n_mels` must be an integer >= 1 \(0 given\)'):
        mel_filterbank(257, 0., 8000., 0, 16000)

def test_dct_matrix_matches_scipy():
    x = noise(3, 64).double()
    for norm in ('ortho', None):
        ref = scipy.fft.dct(x.numpy(), type=2, norm=norm, axis=-1)[:, :20]
        np.testing.assert_allclose((x.float() @ dct_matrix(20, 64, norm)).numpy(), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r'`n_out` must be a finite number <= 64 \(65 given\)'): dct_matrix(65, 64)
    with pytest.raises(ValueError, match=r'`n_out` must be an integer >= 1 \(0 given\)'): dct_matrix(0, 64)

@needs(EXAMPLES)
@pytest.mark.parametrize('name', [TRUMPET, SPEECH])
@pytest.mark.parametrize('power', [1., 2.])
def test_linear_spectrogram_matches_librosa(name, power):
    y, sr = librosa.load(EXAMPLES/name, sr=None)
    ours = spectrogram(torch.from_numpy(y), n_fft=1024, hop_length=256, power=power).numpy()
    ref = np.abs(librosa.stft(y, n_fft=1024, hop_length=256, center=True, pad_mode='reflect')) ** power
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)

@needs(EXAMPLES)
def test_htk_mel_spectrogram_without_norm_matches_librosa():
    "torchaudio's MelSpectrogram defaults (htk scale, no norm), as fastaudio used them, reproduced by the config"
    y, sr = librosa.load(EXAMPLES/TRUMPET, sr=None)
    ms = MelSpec(sr=sr, n_fft=1024, hop_length=256, n_mels=128, db=False, mel_scale='htk', mel_norm=None)
    ours = ms(AudioTensor(torch.from_numpy(y)[None], sr=sr))[0].numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256, n_mels=128, htk=True, norm=None,
                                         pad_mode='reflect')
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)

@pytest.mark.parametrize('top_db', [None, 80., 30.])
def test_power_to_db_matches_librosa_per_item(top_db):
    x = (noise(3, 1, 20, 30).abs() ** 4) * torch.tensor([1., 1e-3, 1e-12]).reshape(3, 1, 1, 1)
    ours = power_to_db(x, top_db=top_db)
    for i in range(3):  # librosa's top_db is relative to the peak of what it is given: one item
        np.testing.assert_allclose(ours[i].numpy(), librosa.power_to_db(x[i].numpy(), amin=1e-10, top_db=top_db), atol=1e-4)
    m = x.sqrt()
    np.testing.assert_allclose(amplitude_to_db(m[0], top_db=top_db).numpy(),
                               librosa.amplitude_to_db(m[0].numpy(), top_db=top_db), atol=1e-4)

def test_db_does_not_depend_on_batch_shape():
    "The per-item floor is the same for an item alone, in a 4-D batch and in a 5-D batch"
    x = noise(4, 2, 16, 25).exp() * torch.tensor([1., 1e-2, 1e-5, 1e3]).reshape(4, 1, 1, 1)
    b4 = power_to_db(x, top_db=20.)
    b5 = power_to_db(x.reshape(2, 2, 2, 16, 25), top_db=20.).reshape(4, 2, 16, 25)
    items = torch.stack([power_to_db(xi, top_db=20.) for xi in x])
    torch.testing.assert_close(b4, items, rtol=0, atol=0)
    torch.testing.assert_close(b5, items, rtol=0, atol=0)
    assert (b4[2] >= b4[2].amax() - 20. - 1e-4).all() and b4[2].amin() > b4[0].amin() - 100

def test_db_to_power_inverts_power_to_db():
    x = noise(2, 1, 8, 8).exp()
    torch.testing.assert_close(db_to_power(power_to_db(x)), x, rtol=1e-5, atol=0)
    torch.testing.assert_close(db_to_power(power_to_db(x, power=1.), power=1.), x, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match=r'`top_db` must be a finite number >= 0 \(-3 given\)'): power_to_db(x, top_db=-3)

def test_spectrogram_of_a_batch_equals_its_items():
    x = AudioTensor(noise(5, 2, 12000), sr=16000)
    ms = MelSpec.from_preset('quick')
    batch = ms(x)
    items = torch.stack([ms(AudioTensor(xi, sr=16000)) for xi in x])
    torch.testing.assert_close(batch.as_subclass(torch.Tensor), items.as_subclass(torch.Tensor), rtol=1e-5, atol=1e-4)
    ms80 = MelSpec.from_preset('quick', top_db=40.)
    batch, items = ms80(x), torch.stack([ms80(AudioTensor(xi, sr=16000)) for xi in x])
    torch.testing.assert_close(batch.as_subclass(torch.Tensor), items.as_subclass(torch.Tensor), rtol=1e-5, atol=1e-4)

def tone(f, sr, seconds=1.): return torch.sin(2 * math.pi * f * torch.arange(int(sr * seconds)) / sr)

def test_resample_length_and_tone_preserved():
    y = resample(tone(440., 44100)[None, None].repeat(2, 1, 1), 44100, 16000)
    assert y.shape == (2, 1, 16000)
    ref = tone(440., 16000)
    assert rel_rms(y[0, 0, 200:-200], ref[200:-200]) < 1e-3  # away from the zero-padded ends
    assert resample(torch.ones(7), 8000, 16000).shape == (14,) and resample(torch.ones(10), 3, 2).shape == (7,)
    x = noise(3, 100)
    assert torch.equal(resample(x, 8000, 8000), x) and resample(x, 8000, 8000).data_ptr() != x.data_ptr()

def test_resample_coprime_rates():
    "Rates whose gcd is 1 (44100 -> 16001) need 16,001 filter phases: they work, and agree with SciPy"
    x = tone(1000., 44100, .5) + 0.5 * tone(5000., 44100, .5)
    y = resample(x, 44100, 16001)
    ref = scipy.signal.resample_poly(x.double().numpy(), 16001, 44100)
    assert y.shape == (math.ceil(len(x) * 16001 / 44100),) and rel_rms(y, ref) < 1e-3

def test_resample_removes_what_the_new_rate_cannot_hold():
    "A 7 kHz tone resampled 44.1k -> 8k (Nyquist 4 kHz) is filtered out, not aliased to 1 kHz"
    y = resample(tone(7000., 44100), 44100, 8000)
    assert float(y[400:-400].abs().max()) < 2e-3

def test_resample_errors():
    with pytest.raises(ValueError, match=r'`orig_sr` must be an integer >= 1 \(0 given\)'): resample(noise(5), 0, 8)
    with pytest.raises(ValueError, match=r'`new_sr` must be an integer >= 1 \(22050.5 given\)'):
        resample(noise(5), 8000, 22050.5)
    with pytest.raises(ValueError, match=r'`x` must be a float tensor \(torch.int64 given\)'):
        resample(torch.arange(5), 8000, 16000)

@needs(EXAMPLES)
@pytest.mark.parametrize('orig,new', [(44100, 16000), (22050, 16000), (8000, 16000)])
@pytest.mark.parametrize('name', [TRUMPET, SPEECH])
def test_resample_matches_scipy_resample_poly(name, orig, new):
    """Within 1e-3 relative RMS of `scipy.signal.resample_poly` (measured: 5e-4 to 7e-4 on both recordings): the same
    filter design (Kaiser β=5, 10 zero crossings, cut at the lower Nyquist), computed polyphase in torch"""
    y, sr = librosa.load(EXAMPLES/name, sr=None)  # 22,050 Hz
    x = y if orig == sr else scipy.signal.resample_poly(y.astype(np.float64), orig, sr).astype(np.float32)
    ref = scipy.signal.resample_poly(x.astype(np.float64), new // math.gcd(orig, new), orig // math.gcd(orig, new))
    ours = resample(torch.from_numpy(x), orig, new).numpy()
    assert len(ours) == len(ref) == math.ceil(len(x) * new / orig)
    assert rel_rms(ours, ref) < 1e-3

@needs(EXAMPLES)
def test_load_audio_resamples_with_the_front_end():
    x, sr = load_audio(EXAMPLES/TRUMPET, sr=16000)
    y, sr0 = librosa.load(EXAMPLES/TRUMPET, sr=None)
    assert sr == 16000 and x.shape == (1, math.ceil(len(y) * 16000 / sr0))
    assert rel_rms(x[0].numpy(), scipy.signal.resample_poly(y.astype(np.float64), 320, 441)) < 1e-3

def test_batch_on_any_leading_shape_and_dtype():
    x = noise(2, 3, 4000)
    s = spectrogram(x, 256, 128)
    assert s.shape == (2, 3, 129, 32) and s.dtype == torch.float32
    torch.testing.assert_close(s[1, 2], spectrogram(x[1, 2], 256, 128))
    assert resample(x.double(), 8000, 16000).dtype == torch.float64

# Cross-checks against torchaudio: they run where torchaudio loads (the oldest supported stack in .ci/run) and skip,
# saying why, where it does not (newer torch, CPU-only torch)
def test_mel_spectrogram_matches_torchaudio():
    ta = torchaudio_or_skip()
    x = noise(2, 1, 16000)
    ref = ta.transforms.MelSpectrogram(16000, n_fft=512, hop_length=256, n_mels=64, norm='slaney', mel_scale='slaney')(x)
    ours = MelSpec(sr=16000, n_fft=512, hop_length=256, n_mels=64, db=False)(AudioTensor(x, sr=16000))
    torch.testing.assert_close(ours.as_subclass(torch.Tensor), ref, rtol=1e-4, atol=1e-4)
    fb = ta.functional.melscale_fbanks(257, 0., 8000., 64, 16000, norm=None, mel_scale='htk')
    # torchaudio builds its filters in float32, fastnorm in float64: they differ by up to 5e-6 (peaks are 1)
    torch.testing.assert_close(mel_filterbank(257, 0., 8000., 64, 16000, norm=None, mel_scale='htk'), fb,
                               rtol=0, atol=1e-5)

def test_resample_close_to_torchaudio():
    "Both are windowed-sinc filters (different windows): they agree to about 1% of the signal on broadband noise"
    ta = torchaudio_or_skip()
    x = noise(2, 44100)
    ref = ta.functional.resample(x, 44100, 16000, lowpass_filter_width=10, rolloff=1.0,
                                 resampling_method='sinc_interp_kaiser', beta=5.0)
    assert ref.shape == resample(x, 44100, 16000).shape
    assert rel_rms(resample(x, 44100, 16000).numpy(), ref.numpy()) < 2e-2

@pytest.mark.slow
def test_fastnorm_never_imports_torchaudio():
    "Importing every module (and the star-import) leaves torchaudio unimported, installed or not"
    import subprocess, sys
    code = ("import sys, pkgutil, importlib, fastnorm, fastnorm.all\n"
            "for m in pkgutil.walk_packages(fastnorm.__path__, 'fastnorm.'):\n"
            "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] == 'torchaudio'))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'

@pytest.mark.parametrize('call, name', [
    (lambda: mel_filterbank(257, math.nan, 8000., 40, 16000), 'f_min'),
    (lambda: mel_filterbank(257, 0., math.nan, 40, 16000), 'f_max'),
    (lambda: mel_filterbank(257, 0., 8000., math.nan, 16000), 'n_mels'),
    (lambda: mel_filterbank(math.nan, 0., 8000., 40, 16000), 'n_freqs'),
    (lambda: dct_matrix(math.nan, 64), 'n_out'),
    (lambda: dct_matrix(20, math.nan), 'n_in'),
    (lambda: spectrogram(noise(1, 512), 256, 128, power=math.nan), 'power'),
    (lambda: power_to_db(noise(1, 4).exp(), amin=math.nan), 'amin'),
    (lambda: power_to_db(noise(1, 4).exp(), top_db=math.nan), 'top_db'),
    (lambda: amplitude_to_db(noise(1, 4).exp(), amin=math.nan), 'amin'),
    (lambda: resample(noise(5), math.nan, 8), 'orig_sr'),
    (lambda: resample(noise(5), 8, math.nan), 'new_sr'),
    (lambda: resample(noise(5), 8, 16, rolloff=math.nan), 'rolloff'),
    (lambda: resample(noise(5), 8, 16, lowpass_width=math.nan), 'lowpass_width'),
    (lambda: resample(noise(5), 8, 16, beta=math.nan), 'beta'),
])
def test_nan_is_refused_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\(nan given\)"): call()
