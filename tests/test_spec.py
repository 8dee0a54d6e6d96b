import math
import numpy as np, torch, pytest
from fastnorm.audio import AudioTensor
from fastnorm.spec import *
from fastnorm.dsp import power_to_db
from fastai.vision.augment import Flip
from conftest import EXAMPLES, needs

def batch(b=3, n=8000, sr=8000):
    return AudioTensor(torch.randn(b, 1, n, generator=torch.Generator().manual_seed(0)), sr=sr)

def test_melspec_shapes_type_and_cfg():
    tfm = MelSpec(sr=8000, n_fft=256, hop_length=128, n_mels=40)
    s = tfm(batch())
    assert isinstance(s, TensorSpec) and s.shape == (3, 1, 40, 8000//128 + 1) and s.cfg == tfm.cfg
    assert s.cfg.n_frames(8000) == s.shape[-1]
    item = s[1]
    assert isinstance(item, TensorSpec) and item.cfg == tfm.cfg

def test_clone_keeps_settings():
    s = MelSpec(sr=8000, n_fft=256, n_mels=20)(batch())
    c = s.clone()
    assert isinstance(c, TensorSpec) and c.cfg == s.cfg and torch.equal(c, s) and c.data_ptr() != s.data_ptr()
    a = batch().clone()
    assert isinstance(a, AudioTensor) and a.sr == 8000

def test_linear_spectrogram_preset():
    s = MelSpec.from_preset('paper')(AudioTensor(torch.randn(2, 1, 16000), sr=16000))
    assert s.shape == (2, 1, 201, 81) and s.cfg.n_mels is None

def test_unknown_preset_and_wrong_rate():
    with pytest.raises(ValueError, match="Unknown spectrogram preset 'nope'"): MelSpec.from_preset('nope')
    with pytest.raises(ValueError, match='expects audio at sr=16000 Hz but got sr=8000'): MelSpec()(batch())

def test_bad_config_names_the_argument():
    with pytest.raises(ValueError, match=r'`hop_length` must be an integer >= 1 \(0 given\)'): SpecConfig(hop_length=0)
    with pytest.raises(ValueError, match=r'`sr` must be an integer >= 1 \(True given\)'): SpecConfig(sr=True)
    with pytest.raises(ValueError, match=r"`power` must be one of \(1.0, 2.0\) \(3 given\)"): SpecConfig(power=3)
    with pytest.raises(ValueError, match='`f_max`'): SpecConfig(sr=8000, f_max=6000)

def test_clip_shorter_than_fft_window_is_padded():
    s = MelSpec(sr=8000, n_fft=512, hop_length=128, n_mels=20)(AudioTensor(torch.randn(2, 1, 100), sr=8000))
    assert s.shape == (2, 1, 20, 5) and torch.isfinite(s).all()

def test_db_and_top_db_per_item():
    x = torch.tensor([1e-3, 1., 100.]).reshape(1, 1, 1, 3).repeat(2, 1, 1, 1); x[1] *= 1e-4
    d = power_to_db(x)
    assert torch.allclose(d[0].flatten(), torch.tensor([-30., 0., 20.]), atol=1e-5) and torch.allclose(d[1].flatten(), torch.tensor([-70., -40., -20.]), atol=1e-5)
    d = power_to_db(x, top_db=30.)  # each item floored at its own peak - 30 dB
    assert torch.allclose(d[0].flatten(), torch.tensor([-10., 0., 20.]), atol=1e-5) and torch.allclose(d[1].flatten(), torch.tensor([-50., -40., -20.]), atol=1e-5)
    assert power_to_db(torch.zeros(1, 1, 1, 1)).item() == pytest.approx(-100.)

def test_image_augmentations_leave_spectrograms_alone():
    s = MelSpec(sr=8000, n_fft=256, n_mels=20)(batch())
    assert torch.equal(Flip(p=1.)(s, split_idx=0), s)

def test_show_has_time_and_hz_axes():
    s = MelSpec(sr=8000, n_fft=256, n_mels=20)(batch())
    ax = s[0].show(title='x')
    assert ax.get_xlabel() == 'time (s)' and ax.get_ylabel() == 'Hz' and ax.get_xlim()[1] == pytest.approx(s.shape[-1]*128/8000)
    assert len(ax.figure.axes) == 2  # with its colorbar

def test_mel_frequencies_match_librosa():
    librosa = pytest.importorskip('librosa')
    cfg = SpecConfig(sr=22050, n_fft=2048, hop_length=512, n_mels=64, f_min=20.)
    np.testing.assert_allclose(mel_frequencies(cfg), librosa.mel_frequencies(66, fmin=20., fmax=11025.)[1:-1], rtol=1e-9)

@needs(EXAMPLES)
@pytest.mark.parametrize('name', ['sorohanro_-_solo-trumpet-06.ogg', '198-209-0000.ogg'])
@pytest.mark.parametrize('n_fft,hop,n_mels', [(2048, 512, 128), (1024, 256, 64)])
def test_melspectrogram_matches_librosa(name, n_fft, hop, n_mels):
    librosa = pytest.importorskip('librosa')
    y, sr = librosa.load(EXAMPLES/name, sr=None)
    ours = MelSpec(sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, db=False)(AudioTensor(torch.from_numpy(y)[None], sr=sr))[0].numpy()
    ref = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, center=True, pad_mode='reflect',
                                         power=2.0, htk=False, norm='slaney')
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(power_to_db(torch.from_numpy(ref)).numpy(), librosa.power_to_db(ref, top_db=None), atol=1e-4)

def test_whole_numbers_are_stored_as_ints():
    cfg = SpecConfig(sr=8000., n_fft=np.int64(256), hop_length=128, n_mels=40.)
    assert cfg == SpecConfig(sr=8000, n_fft=256, hop_length=128, n_mels=40) and cfg.key() == SpecConfig(
        sr=8000, n_fft=256, hop_length=128, n_mels=40).key()
    assert all(type(getattr(cfg, k)) is int for k in ('sr', 'n_fft', 'hop_length', 'n_mels'))

@pytest.mark.parametrize('name', ['sr', 'n_fft', 'hop_length', 'win_length', 'n_mels', 'f_min', 'f_max', 'power',
                                  'top_db'])
def test_nan_is_refused_naming_the_argument(name):
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\(nan given\)"): SpecConfig(**{name: math.nan})
    if name not in ('f_min', 'f_max', 'top_db', 'power'): return
    with pytest.raises(ValueError, match=rf"`{name}` must be .*\(nan given\)"): MelSpec(**{name: math.nan})
