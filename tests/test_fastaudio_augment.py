"fastnorm.fastaudio augmentations: fastaudio's semantics, and the documented differences"
import warnings
import numpy as np, pytest, torch
from unittest.mock import patch
from fastnorm.fastaudio.all import *
from fastnorm.fastaudio.augment import functional as fa_functional
from fastnorm.fastaudio.augment.preprocess import nonsilent_intervals
from fastnorm.fastaudio.util import apply_transform

@pytest.fixture
def audio(): return test_audio_tensor()

def voice_sg(channels=1):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return AudioToSpec.from_cfg(AudioConfig.Voice())(test_audio_tensor(channels=channels))

def test_resample_lengths_rates_and_no_op(audio):
    inp, out = apply_transform(Resample(audio.sr), audio)
    assert out.sr == inp.sr and torch.equal(out, inp)
    for rate in (2000, 8000, 22050, 44100):
        out = Resample(rate)(audio)
        assert out.sr == rate and out.nsamples == inp.duration * rate and isinstance(out, AudioTensor)
    out = Resample(8000)(test_audio_tensor(channels=3))
    assert out.shape == (3, 16000) and out.sr == 8000

def test_resample_is_scipy_resample_poly(audio):
    from scipy.signal import resample_poly
    out = Resample(22050)(audio)
    assert np.array_equal(out.numpy()[0], resample_poly(audio.numpy()[0], 441, 320).astype(np.float32))
    odd = Resample(71993)(audio)  # coprime rates: no giant polyphase kernel
    assert odd.nsamples == -(-32000 * 71993 // 16000) and odd.sr == 71993

def test_nonsilent_intervals_match_librosa_split():
    librosa = pytest.importorskip('librosa')
    x = np.zeros(16000, dtype=np.float32)
    x[3000:6000] = np.sin(np.arange(3000) * 0.3)
    x[9000:9500] = 0.5 * np.sin(np.arange(500) * 0.2)
    for hop in (320, 512):
        ref = librosa.effects.split(x, top_db=20, hop_length=hop)
        assert np.array_equal(nonsilent_intervals(x, top_db=20, hop_length=hop), ref)

def test_remove_silence(audio):
    x = torch.zeros(1, 32000)
    x[0, 8000:16000] = torch.sin(torch.arange(8000) * 0.3)
    a = AudioTensor(x, 16000)
    trimmed = RemoveSilence(threshold=20, pad_ms=20)(a)
    assert 8000 <= trimmed.nsamples < 12000 and trimmed.sr == 16000
    ones = AudioTensor(torch.ones_like(audio), 16000)
    for t in (RemoveType.All, RemoveType.Trim, RemoveType.Split):
        assert RemoveSilence(t, threshold=20, pad_ms=20)(ones).nsamples == ones.nsamples
    assert RemoveSilence(None)(a) is a
    with pytest.raises(ValueError, match='Valid options for silence removal'): RemoveSilence('trim')(a)

def test_resize_signal_crop_pad_repeat():
    audio = test_audio_tensor(seconds=10, sr=1000)
    for i in (1, 2, 5):
        inp, out = apply_transform(ResizeSignal(i * 1000), audio)
        assert out.duration == i and out.nsamples == i * inp.sr
    a = test_audio_tensor()
    out = ResizeSignal((a.duration + 1) * 1000, pad_mode=AudioPadType.Zeros_After)(a)
    assert (out[:, -16000:] == 0).all() and torch.equal(out[:, :32000], a)
    inp, out = apply_transform(ResizeSignal(a.duration * 1000 * 3, pad_mode=AudioPadType.Repeat), a)
    for i in range(3): assert torch.equal(out[:, i * 32000:(i + 1) * 32000], inp)
    assert ResizeSignal(a.duration * 1000)(a) is a
    with pytest.raises(ValueError, match='not currently supported'): ResizeSignal(12000, pad_mode='tenchify')

def test_shift_and_shifter(audio):
    t3 = torch.arange(1, 31).reshape(3, 10)
    assert torch.equal(shift_signal(t3, -2, roll=False)[0], torch.tensor([3, 4, 5, 6, 7, 8, 9, 10, 0, 0]))
    assert torch.equal(shift_signal(t3[:1], 4, roll=False)[0], torch.tensor([0, 0, 0, 0, 1, 2, 3, 4, 5, 6]))
    assert torch.equal(shift_signal(torch.arange(1, 10), 0, roll=False), torch.arange(1, 10))
    with pytest.raises(ValueError, match='Direction'): SignalShifter(p=1, direction=-2)
    s = SignalShifter(p=1, max_pct=0.5, roll=True, direction=1)
    inp, out = apply_transform(s, audio)
    k = int(s.shift_factor * 0.5 * audio.nsamples)
    assert k >= 0 and torch.equal(out, inp.roll(k, -1))
    assert torch.equal(s(audio.clone(), split_idx=1), audio)  # validation: untouched
    sg = AudioToSpec.from_cfg(AudioConfig.BasicSpectrogram())(audio)
    inp, out = apply_transform(SignalShifter(1, 1), sg)
    assert out.shape == inp.shape and not torch.equal(out, inp) and isinstance(out, AudioSpectrogram)

def test_item_noise_volume_cutout_loss(audio):
    ones = AudioTensor(torch.ones_like(audio), 16000)
    add = AddNoise(p=1.0)
    assert not torch.equal(add(ones.clone(), split_idx=0), ones) and torch.equal(add(ones.clone(), split_idx=1), ones)
    pink = AddNoise(noise_level=0.1, color=NoiseColor.Pink, p=1.)(ones, split_idx=0)
    assert 0.02 < float((pink - ones).std()) < 0.3
    with pytest.raises(ValueError, match='color 5 is not valid'): AddNoise(color=5)
    vol = ChangeVolume(p=1., lower=2., upper=2.)
    assert torch.allclose(vol(audio, split_idx=0), 2 * audio)
    cut = SignalCutout(p=1., max_cut_pct=0.5)
    out = cut(ones, split_idx=0)
    assert int((out == 0).sum()) == int(ones.nsamples * cut.cut_pct) and torch.equal(ones, torch.ones_like(ones))
    loss = SignalLoss(p=1., max_loss_pct=0.5)
    out = loss(ones, split_idx=0)
    assert abs(float((out == 0).float().mean()) - loss.loss_pct) < 0.02

def test_gpu_signal_transforms(audio):
    with pytest.raises(ValueError): AddNoiseGPU(audio, color=5)
    with pytest.raises(ValueError): AddNoiseGPU(color=-3)
    for color in (NoiseColor.White, NoiseColor.Pink, NoiseColor.Brown):
        inp, out = apply_transform(AddNoiseGPU(color=color, p=1.0, min_level=0.1, max_level=0.2), audio)
        assert out.shape == inp.shape and not torch.equal(out, inp) and torch.equal(inp, audio)
    batch = AudioTensor(torch.rand(8, 2, 16000) * 0.9 + 0.1, 16000)
    out = ChangeVolumeGPU(p=1., lower=0.5, upper=1.5)(batch)
    g = out[:, :1, :1] / batch[:, :1, :1]
    assert torch.allclose(out, batch * g, rtol=1e-5) and ((g >= 0.5) & (g <= 1.5)).all() and g.std() > 0
    assert torch.equal(ChangeVolumeGPU(p=0.)(batch), batch)
    c, s = 2, 16000
    cut = SignalCutoutGPU(p=1.0, min_cut_pct=0.10, max_cut_pct=0.15)
    inp, out = apply_transform(cut, AudioTensor(torch.rand(c, s) * 0.9 + 0.1, 16000))
    assert 0.10 * s * c <= int((out == 0).sum()) <= 0.15 * s * c
    out = SignalLossGPU(p=1., min_cut_pct=0.2, max_cut_pct=0.2)(batch)
    assert abs(float((out == 0).float().mean()) - 0.2) < 0.01

def test_colored_noise_spectrum_slope():
    torch.manual_seed(0)
    for beta in (-1, 1, 2):
        x = colored_noise((64, 4096), beta)
        assert abs(float(x.std()) - 1) < 0.15
        p = torch.fft.rfft(x).abs().pow(2).mean(0)
        f = torch.fft.rfftfreq(4096)
        sel = (f > 0.01) & (f < 0.4)
        slope = np.polyfit(np.log(f[sel].numpy()), np.log(p[sel].numpy()), 1)[0]
        assert abs(slope + beta) < 0.15

def test_region_mask_and_mask_along_axis():
    assert region_mask(2, 3, 7, 12).shape == (2, 12)
    with patch('torch.rand', side_effect=[torch.tensor([[1.], [0.]]), torch.tensor([[0.], [0.5]])]):
        m = region_mask(2, 4, 6, 10)
    assert torch.equal(m, torch.tensor([[1] * 6 + [0] * 4, [0] * 3 + [1] * 4 + [0] * 3]).bool())
    c, f, t = 2, 120, 80
    grad = AudioSpectrogram(torch.linspace(0, 1, f).view(1, f, 1).repeat(c, 1, t))
    with patch.object(fa_functional, 'region_mask', side_effect=[torch.tensor([[1] * 10 + [0] * (f - 10)]).bool()]):
        out = MaskFreqGPU(min_size=5, max_size=7)(grad)
    mean = grad[:, :10].mean((-2, -1))
    assert torch.allclose(out[:, :10], mean[:, None, None].expand(c, 10, t)) and torch.equal(out[:, 10:], grad[:, 10:])
    sg = AudioSpectrogram(torch.rand(c, f, t))
    two = torch.tensor([[1] * 10 + [0] * (t - 10), [0] * (t - 10) + [1] * 10]).bool()
    with patch.object(fa_functional, 'region_mask', side_effect=[two]):
        out = MaskTimeGPU(num_masks=2, mask_val=10)(sg)
    assert (out[..., :10] == 10).all() and (out[..., -10:] == 10).all() and not (out[..., 10:-10] == 10).any()

def test_mask_val_zero_masks_with_zero():
    "a documented difference: fastaudio tested `if mask_val:`, so mask_val=0 fell back to the mean"
    sg = AudioSpectrogram(torch.rand(1, 50, 40) + 1)
    out = MaskTimeGPU(min_size=10, max_size=10, mask_val=0.)(sg)
    assert int((out == 0).all(-2).sum()) == 10

def test_item_masks_crop_roll_resize():
    sg = voice_sg()
    out = MaskFreq(size=7, start=3, val=5.)(sg)
    assert (out[:, 3:10] == 5).all() and torch.equal(out[:, 10:], sg[:, 10:]) and not (sg[:, 3:10] == 5).any()
    out = MaskTime(num_masks=1, size=4, start=0)(sg)
    assert torch.allclose(out[..., :4], sg.mean().expand(1, 128, 4)) and torch.equal(out[..., 4:], sg[..., 4:])
    with pytest.raises(ValueError, match='out of range'): MaskFreq(size=20, start=120)(sg)
    for i in (1, 2):
        out = CropTime(i * 1000)(sg)
        assert out.width == int(16000 * i / 128) + 1 and round(out.duration) == i and out.n_fft == 1024
    out = CropTime(3 * 1000 * 2, pad_mode=AudioPadType.Repeat)(sg)
    assert torch.equal(out[..., :sg.width], sg) and out.width == int(16000 * 6 / 128) + 1
    with pytest.raises(ValueError, match='not currently supported'): CropTime(12000, pad_mode='zerosafter')(sg)
    rolled = SGRoll(1)(sg)
    assert any(torch.equal(rolled, sg.roll(k, -1)) for k in range(-sg.width, sg.width))
    with pytest.raises(ValueError, match='Direction'): SGRoll(direction=2)
    assert TfmResize(224)(sg).shape == (1, 224, 224) and TfmResizeGPU(64)(sg[None]).shape == (1, 1, 64, 64)

def test_deltas():
    librosa = pytest.importorskip('librosa')
    sg = voice_sg(channels=2)
    out = Delta()(sg)
    assert out.shape == (6, 128, sg.width) and out.sr == 16000
    assert np.allclose(out[1].numpy(), librosa.feature.delta(sg[0].numpy(), order=1), atol=1e-4)
    assert np.allclose(out[5].numpy(), librosa.feature.delta(sg[1].numpy(), order=2), atol=1e-4)
    gpu = DeltaGPU()(sg)
    assert gpu.shape == (6, 128, sg.width) and torch.equal(gpu[:2], sg)
    ramp = AudioSpectrogram(torch.arange(20.).expand(1, 1, 3, 20))
    d = compute_deltas(ramp, 5)
    assert torch.allclose(d[..., 2:-2], torch.ones(1, 1, 3, 16))  # slope 1 away from the ends

def test_spectrogram_transforms_warn_on_audio(audio):
    for t in (CropTime(duration=1), Delta(), MaskFreq(), MaskTime(), SGRoll(), TfmResize(size=2)):
        with pytest.warns(UserWarning, match='to an AudioTensor'): assert t(audio) is audio
