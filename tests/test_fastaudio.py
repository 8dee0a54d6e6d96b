"fastnorm.fastaudio core: AudioTensor, AudioSpectrogram, AudioToSpec, AudioConfig vs torchaudio 0.8's rules and librosa"
import inspect, math, warnings
import numpy as np, pytest, torch
from fastnorm.fastaudio.all import *
from fastnorm.fastaudio.core.frontend import ta_mel_filterbank
from fastnorm.fastaudio.util import create_sin_wave, auto_batch
from fastnorm.fastaudio.ci import skip_if_ci
from fastnorm.audio import AudioTensor as FnAudioTensor
from fastnorm.spec import TensorSpec, MelSpec

def noise(c=1, n=16000, seed=0):
    return torch.randn(c, n, generator=torch.Generator().manual_seed(seed))

def test_audio_tensor_is_fastnorm_audio_tensor_with_fastaudio_props(tmp_path):
    a = AudioTensor(torch.ones(1, 3, 10), 120)  # positional sr, as in fastaudio
    assert isinstance(a, FnAudioTensor) and a.sr == 120 and a.nchannels == 3 and a.nsamples == 10
    assert (AudioTensor(torch.ones(10), sr=120) + AudioTensor(torch.ones(10), sr=150)).sr == 120
    t = test_audio_tensor(seconds=2, sr=16000, channels=2)
    assert t.shape == (2, 32000) and t.duration == 2 and t.data[:, :3000].shape[1] == 3000
    t.save(tmp_path/'a.wav')
    back = AudioTensor.create(str(tmp_path/'a.wav'))
    assert back.sr == 16000 and back.shape == (2, 32000) and torch.equal(back, t.as_subclass(torch.Tensor))  # float WAV
    part = AudioTensor.create(tmp_path/'a.wav', frame_offset=100, num_frames=50)
    assert torch.equal(part, t[:, 100:150].as_subclass(torch.Tensor))
    with pytest.raises(FileExistsError, match='already exists'): t.save(tmp_path/'a.wav', overwrite=False)
    with pytest.raises(NotImplementedError, match='normalize=False'):
        AudioTensor.create(tmp_path/'a.wav', normalize=False)

def test_item_methods_do_not_mutate():
    t = test_audio_tensor()
    orig = t.clone()
    assert torch.allclose(t.apply_gain(2.), 2 * orig)
    cut = t.cutout(0.25)
    assert int((cut == 0).all(0).sum()) >= 8000 - 1 and torch.equal(t, orig)
    assert torch.equal(t, orig)

def test_sin_wave_helpers():
    wave, sr = create_sin_wave()
    assert sr == 16000 and wave.shape == (5 * 16000,)
    assert torch.allclose(wave[:3], torch.sin(torch.arange(3) * 2 * math.pi * 400 / 16000))

def test_getters_and_urls(tmp_path):
    for name in ('a/x.wav', 'a/b/y.wav', 'a/z.txt'):
        (tmp_path/name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path/name).write_bytes(b'')
    assert sorted(p.name for p in get_audio_files(tmp_path)) == ['x.wav', 'y.wav']
    assert [p.name for p in AudioGetter('a', recurse=False)(tmp_path)] == ['x.wav']
    assert '.wav' in audio_extensions
    from fastai.data.external import URLs as FastaiURLs
    assert URLs.PETS == FastaiURLs.PETS and not hasattr(FastaiURLs, 'SPEAKERS10')  # fastai's class is left alone

def test_spectrogram_transformer_settings_and_fastaudio_defaults():
    a = test_audio_tensor()
    sg = SpectrogramTransformer(mel=True, to_db=True)(f_max=20000, n_mels=137)(a)
    assert isinstance(sg, AudioSpectrogram) and isinstance(sg, TensorSpec)
    got = (sg.f_max, sg.hop_length, sg.n_fft, sg.sr, sg.height, sg.width, sg.nchannels)
    assert got == (20000, 512, 1024, 16000, 137, 63, 1)
    assert sg.mel and sg.to_db and sg.n_mels == 137 and sg.sample_rate == 16000 and sg.settings['stype'] == 'power'
    assert sg.cfg is None  # f_max above the Nyquist frequency: not a fastnorm SpecConfig
    assert abs(sg.duration - a.duration) < 0.1
    sg2 = SpectrogramTransformer()(hop_length=345)(a)
    assert sg2.n_mels == 128 and sg2.n_fft == 1024 and sg2.hop_length == 345
    params = inspect.signature(SpectrogramTransformer(mel=True, to_db=True)).parameters
    assert params['n_fft'].default == 400 and params['n_mels'].default == 128 and params['top_db'].default is None
    with pytest.raises(AttributeError, match='no attribute'): sg.not_a_setting

def test_unknown_argument_warns_and_unsupported_raise():
    with pytest.warns(UserWarning, match='bogus is not a valid arg name'): SpectrogramTransformer()(bogus=1)
    with pytest.raises(NotImplementedError, match='window_fn'): SpectrogramTransformer()(window_fn=torch.hamming_window)
    with pytest.raises(NotImplementedError, match='power=None'): SpectrogramTransformer(to_db=False)(power=None)

def test_audio_config_dataclasses():
    assert AudioConfig.BasicSpectrogram().mel is False and AudioConfig.BasicSpectrogram().n_fft == 400
    c = AudioConfig.BasicMelSpectrogram(n_fft=512)
    got = (c.mel, c.to_db, c.n_fft, c.n_mels, c.sample_rate, c.norm, c.win_length)
    assert got == (True, True, 512, 128, 16000, None, None)
    v = AudioConfig.Voice()
    assert (v.f_min, v.f_max, v.n_fft, v.hop_length, v.mel, v.to_db) == (50., 8000., 1024, 128, 'True', 'False')
    m = AudioConfig.BasicMFCC()
    assert (m.n_mfcc, m.dct_type, m.norm, m.log_mels) == (40, 2, 'ortho', False)
    sg_cfg = AudioConfig.BasicSpectrogram(n_fft=2000, hop_length=155)
    a = test_audio_tensor()
    sg = AudioToSpec.from_cfg(sg_cfg)(a)
    assert sg.n_fft == 2000 and sg.width == a.nsamples // 155 + 1 and sg.height == 1001
    # the Voice preset's to_db="False" is a truthy string in fastaudio too: it gives dB
    voice = AudioToSpec.from_cfg(AudioConfig.Voice())
    assert voice.settings['to_db'] == 'False' and len(voice.pipe) == 2 and voice(a).min() >= -100

def test_from_cfg_dict_and_pipeline(tmp_path):
    f = tmp_path/'t.wav'
    test_audio_tensor().save(f)
    a2s = AudioToSpec.from_cfg({'mel': False, 'to_db': False, 'hop_length': 128, 'n_fft': 400})
    pipe = Pipeline([OpenAudio([f]), a2s])
    sg = pipe(0)
    assert sg.hop_length == 128 and sg.shape == (1, 201, 251) and (sg >= 0).all()

def test_mel_db_matches_librosa_htk():
    librosa = pytest.importorskip('librosa')
    x = noise(n=8000)
    a = AudioTensor(x, 16000)
    sg = AudioToSpec.from_cfg(AudioConfig.BasicMelSpectrogram(n_fft=512))(a)
    ref = librosa.feature.melspectrogram(y=x[0].numpy().astype(np.float64), sr=16000, n_fft=512, hop_length=256,
                                         n_mels=128, htk=True, norm=None, pad_mode='reflect', power=2.)
    assert np.allclose(sg[0].numpy(), librosa.power_to_db(ref, amin=1e-10, top_db=None), atol=2e-3)
    # the same numbers as fastnorm's own MelSpec with the SpecConfig the spectrogram carries
    assert sg.cfg is not None and torch.allclose(MelSpec(cfg=sg.cfg)(a), sg.as_subclass(torch.Tensor), atol=1e-4)

def test_filterbank_beyond_nyquist_and_odd_rate_match_librosa():
    librosa = pytest.importorskip('librosa')
    fb = ta_mel_filterbank(513, 0., 20000., 137, 16000)
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=137, fmin=0., fmax=20000., htk=True, norm=None)
    assert fb.shape == (513, 137) and np.allclose(fb.numpy(), ref.T, atol=1e-5)
    assert (fb[:, -20:] == 0).all()  # filters above sample_rate/2 get no weight, as in torchaudio
    assert np.allclose(ta_mel_filterbank(257, 0., 11025., 40, 22050, 'slaney').numpy(),
                       librosa.filters.mel(sr=22050, n_fft=512, n_mels=40, htk=True, norm='slaney').T, atol=1e-5)
    # an odd rate: torchaudio put the bins at linspace(0, sample_rate // 2, n_freqs)
    odd = ta_mel_filterbank(257, 0., 5000., 40, 11025)
    ref = librosa.filters.mel(sr=11024, n_fft=512, n_mels=40, fmin=0., fmax=5000., htk=True, norm=None)
    assert np.allclose(odd.numpy(), ref.T, atol=1e-5)

def test_empty_mel_filters_warn():
    with pytest.warns(UserWarning, match='1 of the 128 mel filters have all zero values'):
        AudioToSpec.from_cfg(AudioConfig.BasicMelSpectrogram(n_fft=512))

def test_mfcc_matches_librosa():
    librosa = pytest.importorskip('librosa')
    x = noise(n=8000)
    m = AudioToMFCC.from_cfg(AudioConfig.BasicMFCC())(AudioTensor(x, 16000))
    assert m.shape == (1, 40, 41) and m.n_mfcc == 40 and m.sr == 16000 and m.cfg is None
    mel = librosa.feature.melspectrogram(y=x[0].numpy().astype(np.float64), sr=16000, n_fft=400, hop_length=200,
                                         n_mels=128, htk=True, norm=None, pad_mode='reflect')
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel, amin=1e-10, top_db=80.), n_mfcc=40)
    assert np.allclose(m[0].numpy(), ref, atol=5e-3)
    logm = AudioToMFCC(log_mels=True, n_mfcc=13, melkwargs={'n_mels': 40})(AudioTensor(x, 16000))
    assert logm.shape == (1, 13, 41)
    with pytest.raises(ValueError, match='more MFCC coefficients'): AudioToMFCC(n_mfcc=50, melkwargs={'n_mels': 40})
    with pytest.raises(ValueError, match='DCT type'): AudioToMFCC(dct_type=3)

def test_power_magnitude_normalized_pad():
    x = noise(n=4000)
    a = AudioTensor(x, 16000)
    p = SpectrogramTransformer(mel=False, to_db=False)(n_fft=256)(a)
    m = SpectrogramTransformer(mel=False, to_db=False)(n_fft=256, power=1.)(a)
    assert torch.allclose(m ** 2, p, rtol=1e-4, atol=1e-6)
    e = float(torch.hann_window(256).pow(2).sum())
    n = SpectrogramTransformer(mel=False, to_db=False)(n_fft=256, normalized=True)(a)
    assert torch.allclose(n * e, p, rtol=1e-4)
    padded = SpectrogramTransformer(mel=False, to_db=False)(n_fft=256, pad=64)(a)
    assert padded.width == (4000 + 128) // 128 + 1 and padded.cfg is None
    db = SpectrogramTransformer(mel=False, to_db=True)(n_fft=256, power=1., stype='magnitude', top_db=40.)(a)
    ref = 20 * torch.log10(m.as_subclass(torch.Tensor).clamp(min=1e-10))
    assert torch.allclose(db.as_subclass(torch.Tensor), ref.clamp(min=float(ref.max()) - 40), atol=1e-4)
    assert db.cfg is not None and db.cfg.power == 1. and db.cfg.top_db == 40.

def test_top_db_is_per_item_on_a_batch():
    "A documented difference: torchaudio 0.8 floored a whole batch at its loudest item's peak minus top_db"
    a = AudioTensor(torch.stack([noise(seed=1)[:, :4000], 1e-3 * noise(seed=2)[:, :4000]]), 16000)
    a2s = SpectrogramTransformer(mel=False)(n_fft=256, top_db=30.)
    batch = a2s(a)
    for i in range(2): assert torch.allclose(batch[i], a2s(AudioTensor(a[i], 16000)), atol=1e-4)
    assert float(batch[1].min()) < float(batch[0].max()) - 30  # not floored at the batch's peak

def test_spectrogram_show_and_pickle(tmp_path):
    import matplotlib
    matplotlib.use('Agg')
    sg = AudioToMFCC.from_cfg(AudioConfig.BasicMFCC())(test_audio_tensor())
    assert sg.show(title='mfcc') is not None
    sg2 = AudioToSpec.from_cfg(AudioConfig.Voice())(test_audio_tensor())
    ax = sg2.show()
    assert ax.get_xlabel() == 'time (s)'
    torch.save(sg2, tmp_path/'s.pt')
    back = torch.load(tmp_path/'s.pt', weights_only=False)
    assert back.sr == 16000 and back.n_fft == 1024 and back.cfg == sg2.cfg

def test_apply_transform_auto_batch_and_skip_if_ci(monkeypatch):
    class Twice:
        @auto_batch(2)
        def f(self, x): return x * 2 + x.shape[0] * 0  # sees a batch
    t = torch.ones(1, 5)
    assert Twice().f(t).shape == (1, 5) and Twice().f(t[None]).shape == (1, 1, 5)
    calls = []
    run = skip_if_ci(lambda: calls.append('ran'))
    monkeypatch.setenv('CI', 'true')
    run()
    monkeypatch.setenv('CI', 'false')
    run()
    assert calls == ['ran']

def test_audio_block_in_a_datablock(tiny_esc50):
    import pandas as pd
    from fastai.data.block import DataBlock, CategoryBlock
    from fastai.data.transforms import ColReader, RandomSplitter
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        a2s = AudioToSpec.from_cfg(AudioConfig.BasicMelSpectrogram(n_fft=512, n_mels=64))
    db = DataBlock(blocks=(AudioBlock, CategoryBlock), get_x=ColReader('filename', pref=tiny_esc50/'audio'),
                   get_y=ColReader('category'), splitter=RandomSplitter(seed=0), batch_tfms=[a2s])
    dls = db.dataloaders(df, bs=4)
    x, y = dls.one_batch()
    assert isinstance(x, AudioSpectrogram) and x.shape == (4, 1, 64, 63) and x.sr == 16000  # resampled from 8 kHz
    db2 = DataBlock(blocks=(AudioBlock(sample_rate=None, crop_signal_to=500), CategoryBlock),
                    get_x=ColReader('filename', pref=tiny_esc50/'audio'), get_y=ColReader('category'))
    dls2 = db2.dataloaders(df, bs=4)
    b = dls2.one_batch()[0]
    assert isinstance(b, AudioTensor) and b.shape == (4, 1, 4000) and b.sr == 8000
    import matplotlib
    matplotlib.use('Agg')
    def no_player(self): raise AssertionError('show_batch must not open an audio player per item')
    AudioTensor.hear, old = no_player, AudioTensor.hear
    try: dls2.show_batch(max_n=2)
    finally: AudioTensor.hear = old
    assert len(dls.show_batch(max_n=2) or [None]) >= 1

def test_preprocess_audio_folder(tmp_path):
    d = tmp_path/'data'
    (d/'sub').mkdir(parents=True)
    test_audio_tensor(channels=2).save(d/'sub'/'t.wav')
    out = preprocess_audio_folder(d, sample_rate=8000, crop_signal_to=1000)
    got = AudioTensor.create(out/'sub'/'t.wav')
    assert out == tmp_path/'data_cached' and got.sr == 8000 and got.shape == (1, 8000)
    assert len(audio_item_tfms(8000, True, 4000)) == 3

def test_fastnorm_transforms_apply_to_audio_spectrogram():
    from fastnorm.augment import FreqMask
    from fastnorm.norm import SpecNormalize
    from fastnorm.stats import StatsRecorder
    a = AudioTensor(torch.stack([noise(seed=i)[:, :4000] for i in range(3)]), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        x = AudioToSpec.from_cfg(AudioConfig.BasicMelSpectrogram(n_fft=512, n_mels=32))(a)
    m = FreqMask(freq_mask_param=4, draw={'width': 4, 'start': 2})(x, split_idx=0)
    assert isinstance(m, AudioSpectrogram) and (m[:, :, 2:6] == 0).all() and m.n_fft == 512
    rec = StatsRecorder(red_dims=(0, 1, 3))
    rec.update(x)
    y = SpecNormalize(rec)(x)
    assert isinstance(y, AudioSpectrogram) and y.mean((0, 1, 3)).abs().max() < 1e-4

def test_hear_and_tar_extract(tmp_path, monkeypatch):
    import tarfile, IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, 'display', lambda o: shown.append(o))
    test_audio_tensor(seconds=0.1).hear()
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Audio) and shown[0].data[:4] == b'RIFF'
    (tmp_path/'src').mkdir()
    test_audio_tensor(seconds=0.1).save(tmp_path/'src'/'a.wav')
    with tarfile.open(tmp_path/'set.tgz', 'w:gz') as t: t.add(tmp_path/'src'/'a.wav', arcname='a.wav')
    tar_extract_at_filename(tmp_path/'set.tgz', tmp_path/'out')
    assert AudioTensor.create(tmp_path/'out'/'set'/'a.wav').nsamples == 1600
