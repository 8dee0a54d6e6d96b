"""`to_onnx` / `fastnorm deploy`: the whole inference chain as one ONNX file, against the learner it came from.
onnxruntime (CPU) must give `predict`'s and `get_preds`' probabilities within 1e-4, for every normalization, trained on
the fly and from the feature cache, at batch sizes 1 and 8, for clips shorter than, as long as and longer than
training."""
import json, os, shutil, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pandas as pd, soundfile as sf, torch, pytest
from fastnorm.data import esc50_dls, read_esc50_csv
from fastnorm.audio import AudioTensor, AudioCropPad
from fastnorm.norm import GlobalSpecNorm, FreqSpecNorm, InstanceSpecNorm, ImageNetSpecNorm
from fastnorm.freqnorm import FreqBatchNorm, FreqInstanceNorm, ConstantSpecNorm
from fastnorm.pcen import PCEN, PCENTransform
from fastnorm.study.recipes import PCEN_SCALE
from fastnorm.study.models import make_learner
from fastnorm.augment import SpecAugment
from fastai.torch_core import set_seed, retain_type
from fastai.data.transforms import DisplayedTransform
from fastnorm.spec import TensorSpec
from conftest import SHARED, needs

ort = pytest.importorskip('onnxruntime', reason='the [deploy] extra (onnx, onnxruntime, onnxscript) is not installed')
onnx = pytest.importorskip('onnx', reason='the [deploy] extra is not installed')
pytest.importorskip('onnxscript', reason="torch's ONNX exporter needs onnxscript (the [deploy] extra)")
from fastnorm.deploy import to_onnx, deploy_chain, onnx_metadata, PowerSTFT
from fastnorm.onnxspec import Spectrogram
from fastnorm.spec import SpecConfig, MelSpec

ROOT = Path(__file__).resolve().parents[1]
ESC10 = SHARED/'esc10'
# the normalizations of the issue: batch transforms (made for a `SpecConfig`) and model stems; every one exports
SPEC_TFMS = {
    'none': lambda c: [], 'global': lambda c: [GlobalSpecNorm(progress=False)],
    'channel': lambda c: [FreqSpecNorm(progress=False)], 'instance': lambda c: [InstanceSpecNorm()],
    'instance_freq': lambda c: [InstanceSpecNorm('freq')], 'pcen': lambda c: [PCENTransform(scale=PCEN_SCALE)],
    'rfn': lambda c: [FreqInstanceNorm(.5)], 'imagenet': lambda c: [ImageNetSpecNorm()],
    'fbn': lambda c: [], 'pcen_learn': lambda c: [],
}
WAVE_NORM = {'global', 'channel', 'instance', 'fbn'}

def _stem(norm, c):
    if norm == 'fbn': return FreqBatchNorm(c.n_freq, momentum=None)  # running statistics: the average over the epoch
    if norm == 'pcen_learn': return PCEN(c.n_freq, sr=c.sr, hop_length=c.hop_length, from_db=c.db, scale=PCEN_SCALE)

def _nontrivial(learn):
    "The stems' per-band values, learned in the epoch, differ from band to band: a constant wrongly baked would show"
    for m in learn.model.modules():
        if isinstance(m, PCEN): assert m.params.detach().std(1).min() > 1e-3
        if isinstance(m, FreqBatchNorm): assert m.bn.running_mean.std() > 1e-2 and m.bn.running_var.std() > 1e-2

def train(data, norm, cache, sr, tmp, spec='quick', bs=8, epochs=1):
    "A learner with normalization `norm`, trained `epochs` (SpecAugment on, as a train-only transform)"
    from fastnorm.spec import spec_config
    c = spec_config(spec, sr)
    set_seed(0, reproducible=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = esc50_dls(data, bs=bs, spec=spec, sr=sr, wave_norm=norm in WAVE_NORM, cache=cache, num_workers=0,
                        progress=False, batch_tfms=SPEC_TFMS[norm](c) + [SpecAugment(policy='LB')])
        learn = make_learner(dls, 'xresnet18_tiny', stem=_stem(norm, c))
        learn.path = Path(tmp)
        if epochs:
            with learn.no_bar(), learn.no_logging(): learn.fit(epochs, 1e-2)
            _nontrivial(learn)
    return learn

def clips(src_files, n, sr, tmp):
    """8 WAV files (float) for each length, made from `src_files`: 'short' (0.4 n, zero-padded), 'equal' (n),
    'long' (2.3 n, centre-cropped; odd lengths, so the crop's rounding is tested)"""
    rng = np.random.default_rng(0)
    out = {}
    for kind, m in (('short', int(.4 * n) + 1), ('equal', n), ('long', int(2.3 * n) | 1)):
        (tmp/kind).mkdir(parents=True, exist_ok=True)
        fs = []
        for i, f in enumerate(src_files[:8]):
            x, r = sf.read(f, dtype='float32')
            assert r == sr
            y = np.concatenate([x, rng.standard_normal(n).astype(np.float32) * .1, x[::-1]])
            y = np.roll(y, int(rng.integers(len(y))))[:m]
            fs.append(tmp/kind/f'{i}.wav')
            sf.write(fs[-1], y, sr, subtype='FLOAT')
        out[kind] = fs
    return out

def run_onnx(path, waves):
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return sess.run(['probabilities'], {'waveform': np.stack(waves).astype(np.float32)})[0]

def check_parity(learn, onnx_path, files, sr=None):
    """onnxruntime at batch 8 against `get_preds`, at batch 1 against `predict` (two clips per length); files not at the
    model's rate `sr` are resampled for onnxruntime as the learner resamples them"""
    from fastnorm.audio import load_audio
    read = (lambda f: sf.read(f, dtype='float32')[0]) if sr is None else (lambda f: load_audio(f, sr=sr)[0][0].numpy())
    for kind, fs in files.items():
        with learn.no_bar(): want = learn.get_preds(dl=learn.dls.test_dl(fs, bs=8))[0].numpy()
        got = run_onnx(onnx_path, [read(f) for f in fs])
        assert got.shape == want.shape == (8, len(learn.dls.vocab))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f'batch of 8 {kind} clips')
        for f in fs[:2]:
            with learn.no_bar(): label, idx, probs = learn.predict(f)
            one = run_onnx(onnx_path, [read(f)])
            np.testing.assert_allclose(one[0], probs.numpy(), rtol=0, atol=1e-4, err_msg=f'one {kind} clip {f}')
            assert learn.dls.vocab[int(one[0].argmax())] == label or np.sort(one[0])[-2] > one[0].max() - 1e-4
    return want

@pytest.fixture(scope='module')
def exporter(tmp_path_factory):
    "Skip when this torch's exporter cannot export the front end (detected by trying, not by version)"
    cfg = SpecConfig(sr=8000, n_fft=256, hop_length=128)
    m = torch.nn.Sequential(AudioCropPad(.1).to_module(cfg), Spectrogram(cfg, 800))
    p = tmp_path_factory.mktemp('probe')/'probe.onnx'
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(m, (torch.randn(2, 1001),), dynamo=True, dynamic_shapes=({0: torch.export.Dim('b'),
                              1: torch.export.Dim('n')},), input_names=['waveform']).save(str(p))
    except Exception as e:
        pytest.skip(f"torch {torch.__version__}'s ONNX exporter cannot export fastnorm's front end: "
                    f"{type(e).__name__}: {str(e)[:200]}")
    return p

@pytest.mark.parametrize('n_fft,hop,win,center', [(512, 256, None, True), (400, 200, None, True), (256, 64, 200, True),
                                                 (2048, 512, None, False), (97, 40, None, True)])
def test_power_stft_is_fastnorm_dsp_stft(n_fft, hop, win, center):
    """`PowerSTFT` is the one export-only formulation of a step: training's `torch.stft` becomes onnxruntime's STFT
    operator, which is slow (slowest for sizes that are not powers of 2), so the export computes the same |STFT|² in
    matrix products; this holds the two to each other"""
    from fastnorm.dsp import stft
    x = torch.randn(3, 5000, generator=torch.Generator().manual_seed(0))
    want = stft(x, n_fft, hop, win, center=center).abs().square()  # [3, K, T]
    xp = torch.nn.functional.pad(x[:, None], (n_fft // 2,) * 2, mode='reflect')[:, 0] if center else x
    m = PowerSTFT(n_fft, hop, win, xp.shape[-1])
    got = m(xp)  # [3, T, J], bin order[j] in column j
    K = n_fft // 2 + 1
    assert sorted(m.order[m.order < K].tolist()) == list(range(K))
    got = got[..., m.order < K][..., torch.argsort(m.order[m.order < K])].transpose(1, 2)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6 * float(want.max()))

@pytest.mark.parametrize('db', [True, False])
def test_pcen_modules_are_fastnorm_pcen(db):
    "The modules `to_onnx` exports for PCEN (the transform's, the stem itself) give `pcen`'s numbers (131 frames)"
    from fastnorm.pcen import pcen, pcen_smoothing
    from fastnorm.spec import TensorSpec
    g = torch.Generator().manual_seed(0)
    S = torch.rand(2, 1, 8, 131, generator=g) ** 4 * 1e3 + 1e-3
    cfg = SpecConfig(sr=16000, hop_length=256, n_mels=8, db=db)
    x = 10 * torch.log10(S) if db else S
    tfm = PCENTransform(gain=.9, scale=2.)
    want = pcen(2 * S, 16000, 256, gain=.9)
    torch.testing.assert_close(tfm.to_module(cfg)(x), want, rtol=1e-4, atol=1e-6)
    got = tfm(TensorSpec(x, cfg=cfg))
    assert isinstance(got, TensorSpec) and torch.equal(got.as_subclass(torch.Tensor), tfm.to_module(cfg)(x))
    stem = PCEN(8, sr=16000, hop_length=256, from_db=db, scale=2.)
    with torch.no_grad():
        stem.params.add_(torch.randn(4, 8, generator=g) * .1)
        kw = dict(gain=stem.gain, bias=stem.bias, power=stem.power, s=stem.s)
        torch.testing.assert_close(stem(x), pcen(2 * S, eps=1e-6, **kw), rtol=1e-4, atol=1e-6)
    assert kw['s'].std() > 1e-3 and pcen_smoothing(16000, 256) > 0

def test_front_end_matches_fastnorm_dsp_and_crops_like_predict(exporter):
    from fastnorm.audio import AudioCropPad
    cfg = SpecConfig(sr=8000, n_fft=256, hop_length=128)
    sess = ort.InferenceSession(str(exporter), providers=['CPUExecutionProvider'])
    g = torch.Generator().manual_seed(0)
    for N in (1, 300, 799, 800, 801, 1001, 4000, 4001):
        x = torch.randn(3, N, generator=g) * .3
        crop = AudioCropPad(0.1)
        want = MelSpec(cfg=cfg)(AudioTensor(torch.stack([crop(AudioTensor(w[None], sr=8000), split_idx=1) for w in x]),
                                            sr=8000))
        got = sess.run(None, {'waveform': x.numpy()})[0]
        want = want[:, 0].numpy()  # the probe's waveforms have no channel dim
        assert got.shape == want.shape == (3, 64, 7)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)  # dB, float32 STFT
        assert np.abs(got - want).mean() < 1e-4

class FrontEnd(torch.nn.Module):
    def __init__(self, cfg, n):
        super().__init__()
        self.crop, self.spec = AudioCropPad(n / cfg.sr).to_module(cfg), Spectrogram(cfg, n)
    def forward(self, waveform): return self.spec(self.crop(waveform)[:, None])

@pytest.mark.slow
@pytest.mark.parametrize('cfg,n', [
    (SpecConfig(sr=8000, n_fft=400, hop_length=200, n_mels=None), 4000),  # the paper preset's linear bins
    (SpecConfig(sr=8000, n_fft=512, hop_length=160, n_mels=40, power=1., top_db=80., win_length=400, mel_scale='htk',
                mel_norm=None), 3000),  # magnitude, a hop that does not divide n_fft (frames gathered)
    (SpecConfig(sr=8000, n_fft=256, hop_length=128, db=False, center=False, f_min=100., f_max=3000.), 2000),
    (SpecConfig(sr=8000, n_fft=256, hop_length=64), 200),  # clips shorter than one window: padded to it
], ids=['linear', 'magnitude-topdb-htk', 'power-uncentred', 'shorter-than-nfft'])
def test_front_end_settings(exporter, tmp_path, cfg, n):
    from fastnorm.audio import AudioCropPad
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dims = ({0: torch.export.Dim('b'), 1: torch.export.Dim('n')},)
        torch.onnx.export(FrontEnd(cfg, n).eval(), (torch.randn(2, n + 7),), dynamo=True, input_names=['waveform'],
                          dynamic_shapes=dims).save(tmp_path/'f.onnx')
    sess = ort.InferenceSession(str(tmp_path/'f.onnx'), providers=['CPUExecutionProvider'])
    g = torch.Generator().manual_seed(0)
    for N in (n // 3, n, 2 * n + 1):
        x = torch.randn(2, N, generator=g) * .3
        crop = AudioCropPad(n / cfg.sr)
        cropped = torch.stack([crop(AudioTensor(w[None], sr=cfg.sr), split_idx=1) for w in x])
        want = MelSpec(cfg=cfg)(AudioTensor(cropped, sr=cfg.sr)).numpy()
        got = sess.run(None, {'waveform': x.numpy()})[0]
        assert got.shape == want.shape == (2, 1, cfg.n_freq, cfg.n_frames(n))
        if cfg.db:  # dB: float32 sums differ most in the quietest bins, 70 dB below the peak
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-2)
            assert np.abs(got - want).mean() < 1e-4
        else: np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * want.max())

def test_crop_pad_rule():
    "The module `to_onnx` exports for `AudioCropPad` is the one its `encodes` runs at validation"
    x = torch.arange(1., 8.)[None]  # 7 samples
    cfg = SpecConfig(sr=10)
    crop = lambda n, pad='end': AudioCropPad(n / 10, pad).to_module(cfg)
    assert crop(4)(x).tolist() == [[2., 3., 4., 5.]]  # (7-4)//2 = 1 dropped at the start
    assert crop(10)(x).tolist() == [[1., 2., 3., 4., 5., 6., 7., 0., 0., 0.]]
    assert crop(10, 'both')(x).tolist() == [[0., 1., 2., 3., 4., 5., 6., 7., 0., 0.]]
    assert crop(4, 'both')(x).tolist() == [[2., 3., 4., 5.]]
    out = AudioCropPad(1., 'both')(AudioTensor(x, sr=10), split_idx=1)
    assert isinstance(out, AudioTensor) and out.sr == 10 and out.tolist() == crop(10, 'both')(x).tolist()

@pytest.fixture(scope='module')
def small(tiny_esc50, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('deploy')
    return tmp, train(tiny_esc50, 'channel', False, 8000, tmp), tiny_esc50

def test_refuses_what_it_cannot_export_before_writing(tiny_esc50, tmp_path):
    from fastai.data.transforms import DisplayedTransform
    learn = train(tiny_esc50, 'channel', False, 8000, tmp_path, epochs=0)
    class MyGain(DisplayedTransform):
        order = 99
        def encodes(self, x): return x * 2
    dl = learn.dls.valid
    old = dl.after_batch.fs
    dl.after_batch.fs = old + [MyGain()]
    with pytest.raises(ValueError, match=r'cannot export the batch transform MyGain \(test_deploy\).*implement it'):
        to_onnx(learn, tmp_path/'m.onnx')
    dl.after_batch.fs = old
    opener = next(t for t in dl.dataset.tls[0].tfms.fs if type(t).__name__ == 'OpenAudio')
    opener.mono = False
    with pytest.raises(ValueError, match=r'exports mono learners .* OpenAudio\(mono=False\)'):
        to_onnx(learn, tmp_path/'m.onnx')
    opener.mono = True
    class Branchy(torch.nn.Module):  # control flow on the data: torch.export cannot trace it
        def forward(self, x): return x.mean((2, 3)) if float(x.mean()) > 0 else -x.mean((2, 3))
    learn.model = Branchy()
    with pytest.raises(RuntimeError, match=r'could not export Branchy with torch .* exporter'):
        to_onnx(learn, tmp_path/'m.onnx')
    assert list(tmp_path.rglob('*.onnx*')) == [] and list(tmp_path.rglob('.m.onnx*')) == []

class BinMedian(torch.nn.Module):
    "The module of `MedianBinNorm`: a constant per-bin median subtracted, a constant scale divided by"
    def __init__(self, median, scale):
        super().__init__()
        self.register_buffer('median', torch.as_tensor(median).detach().float().cpu().clone())
        self.scale = scale
    def forward(self, x): return (x - self.median) / self.scale

class MedianBinNorm(DisplayedTransform):
    "A user's own normalization, exportable through `to_module`: each bin's median over a training batch (`setups`)"
    order = 99
    def __init__(self, scale:float=20.): self.scale, self.median = scale, None
    def setups(self, dl):
        x = dl.one_batch()[0].as_subclass(torch.Tensor)  # [B,C,F,T], the transforms before this one applied
        self.median = x.transpose(0, 2).reshape(x.shape[2], -1).median(1).values[None, None, :, None]
    def to_module(self, cfg=None): return BinMedian(self.median, self.scale)
    def encodes(self, x:TensorSpec): return retain_type(self.to_module()(x.as_subclass(torch.Tensor)), old=x)

def test_a_users_own_transform_exports_through_to_module(tiny_esc50, exporter, tmp_path):
    set_seed(0, reproducible=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = esc50_dls(tiny_esc50, bs=8, spec='quick', sr=8000, num_workers=0, progress=False,
                        batch_tfms=[MedianBinNorm(), SpecAugment(policy='LB')])
        learn = make_learner(dls, 'xresnet18_tiny')
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    norm = next(t for t in learn.dls.valid.after_batch.fs if isinstance(t, MedianBinNorm))
    assert norm.median.shape == (1, 1, 64, 1) and norm.median.std() > 1  # learned per bin at setups
    path = to_onnx(learn, tmp_path/'mine.onnx')
    assert onnx_metadata(path)['chain'] == ['CropPadWave', 'MelSpec', 'MedianBinNorm', 'XResNet', 'activation']
    files = clips(list(read_esc50_csv(tiny_esc50).path[::5]), 8000, 8000, tmp_path/'clips')
    want = check_parity(learn, path, files)  # onnxruntime against `predict` and `get_preds`, within 1e-4
    assert want.std(0).max() > 1e-3

def test_deploy_meta_is_added_to_the_metadata(tiny_esc50, exporter, tmp_path):
    learn = train(tiny_esc50, 'channel', False, 8000, tmp_path, epochs=0)
    learn.deploy_meta = {'adapted': 'true', 'adapt_clips': '12'}
    assert deploy_chain(learn).meta['adapt_clips'] == '12'
    meta = onnx_metadata(to_onnx(learn, tmp_path/'m.onnx', check=False))
    assert meta['adapted'] == 'true' and meta['adapt_clips'] == '12' and meta['n_samples'] == 8000
    for bad in ({'vocab': 'x'}, {'adapt_clips': 12}):
        learn.deploy_meta = bad
        with pytest.raises(ValueError, match=r'`learn.deploy_meta` must map new string keys to strings'):
            deploy_chain(learn)

@pytest.mark.slow
def test_metadata_cli_and_a_pickle(small, exporter, tmp_path, monkeypatch, capsys):
    from fastnorm.cli import main
    tmp, learn, _ = small
    learn.export(tmp_path/'learn.pkl')
    monkeypatch.setattr(sys, 'argv', ['fastnorm', 'deploy', str(tmp_path/'learn.pkl'), str(tmp_path/'out.onnx')])
    main()
    assert str(tmp_path/'out.onnx') in capsys.readouterr().out
    meta = onnx_metadata(tmp_path/'out.onnx')
    cfg = learn.dls.valid.after_batch.fs[1].cfg
    assert meta['vocab'] == list(learn.dls.vocab) and meta['sample_rate'] == 8000 and meta['n_samples'] == 8000
    assert meta['spec_config'] == cfg.to_dict() and meta['duration'] == 1.0 and meta['wave_norm'] is True
    assert meta['chain'] == ['CropPadWave', 'AudioNormalize', 'MelSpec', 'FreqSpecNorm', 'XResNet', 'activation']
    assert meta['train_only_skipped'] == ['SpecAugment'] and 'fastnorm_version' in meta
    norm = learn.dls.valid.after_batch.fs[2]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(tmp_path/'out.onnx')).graph.initializer}
    assert any(a.shape == tuple(norm.mean.shape) and np.array_equal(a, norm.mean.numpy()) for a in inits.values())
    x = np.random.default_rng(0).standard_normal((2, 9000)).astype(np.float32)
    chain = deploy_chain(learn)
    with torch.no_grad(): want = chain(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_onnx(tmp_path/'out.onnx', list(x)), want, atol=1e-5, rtol=0)
    monkeypatch.setattr(sys, 'argv', ['fastnorm', 'deploy', str(tmp_path/'nope.pkl'), str(tmp_path/'x.onnx')])
    with pytest.raises(SystemExit, match=r'fastnorm deploy: error: .*nope.pkl'): main()
    assert not (tmp_path/'x.onnx').exists()

@pytest.mark.slow
@pytest.mark.parametrize('cache', [False, True], ids=['fly', 'cached'])
@pytest.mark.parametrize('norm', list(SPEC_TFMS))
def test_parity_on_generated_clips(tiny_esc50, exporter, tmp_path, norm, cache):
    learn = train(tiny_esc50, norm, cache, 8000, tmp_path)
    path = to_onnx(learn, tmp_path/f'{norm}.onnx')
    files = clips(list(read_esc50_csv(tiny_esc50).path[::5]), 8000, 8000, tmp_path/'clips')
    want = check_parity(learn, path, files)
    assert want.std(0).max() > 1e-3  # the clips are told apart: the parity is not that of a constant output

@pytest.mark.slow
@pytest.mark.parametrize('spec,norm', [('paper', 'channel'), ('esc50', 'pcen')])
def test_parity_with_other_presets(tiny_esc50, exporter, tmp_path, spec, norm):
    "The paper preset's linear 201 bins (n_fft 400), the esc50 preset's 2048-point FFT and 128 mels, at 8 kHz"
    learn = train(tiny_esc50, norm, False, 8000, tmp_path, spec=spec)
    path = to_onnx(learn, tmp_path/'m.onnx')
    assert onnx_metadata(path)['spec_config']['n_fft'] == (400 if spec == 'paper' else 2048)
    files = clips(list(read_esc50_csv(tiny_esc50).path[::5]), 8000, 8000, tmp_path/'clips')
    want = check_parity(learn, path, files)
    assert want.std(0).max() > 1e-3

def _esc10_subset(dest, per_class=4):
    "A small folder in ESC-50's layout linking to `per_class` clips of each class and fold of the shared ESC-10"
    df = pd.read_csv(ESC10/'meta'/'esc50.csv')
    df = df[df.fold.isin([1, 2])].groupby(['category', 'fold']).head(per_class // 2).reset_index(drop=True)
    (dest/'meta').mkdir(parents=True)
    (dest/'audio').mkdir()
    for f in df.filename: os.symlink(ESC10/'audio'/f, dest/'audio'/f)
    df.to_csv(dest/'meta'/'esc50.csv', index=False)
    return dest, df

@pytest.mark.slow
@needs(ESC10)
@pytest.mark.parametrize('norm', list(SPEC_TFMS))
def test_parity_on_shared_recordings(exporter, tmp_path, norm):
    data, df = _esc10_subset(tmp_path/'esc10')
    cache = list(SPEC_TFMS).index(norm) % 2 == 1  # half of them from the feature cache
    learn = train(data, norm, cache, 16000, tmp_path)
    path = to_onnx(learn, tmp_path/f'{norm}.onnx')
    new = pd.read_csv(ESC10/'meta'/'esc50.csv').query('fold == 5').groupby('category').head(1)
    files = clips([ESC10/'audio'/f for f in new.filename], 5 * 16000, 16000, tmp_path/'clips')
    want = check_parity(learn, path, files)
    assert want.std(0).max() > 1e-3  # the clips are told apart

# a meta path finder that makes torch, fastai and fastnorm unimportable, then runs a script as __main__
NO_TORCH = """import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'fastai', 'fastcore', 'fastnorm', 'fasttransform'):
            raise ImportError(f'{name} is blocked: the serving side has no torch')
sys.meta_path.insert(0, NoTorch())
for k in [k for k in sys.modules if k.split('.')[0] in ('torch', 'fastai', 'fastnorm')]: del sys.modules[k]
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""

def serve(*args):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    return subprocess.run([sys.executable, '-c', NO_TORCH, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=ROOT)

def test_the_blocker_blocks(tmp_path):
    (tmp_path/'t.py').write_text('import torch\n')
    r = serve(tmp_path/'t.py')
    assert r.returncode == 1 and 'torch is blocked' in r.stderr

@pytest.mark.slow
def test_serving_script_runs_without_torch(small, exporter, tmp_path):
    tmp, learn, data = small
    model = to_onnx(learn, tmp_path/'m.onnx')
    files = clips(list(read_esc50_csv(data).path[::5]), 8000, 8000, tmp_path)
    few = [files['short'][0], files['equal'][1], files['long'][2]]
    x, _ = sf.read(few[1], dtype='float32')
    sf.write(tmp_path/'stereo.wav', np.stack([x, x[::-1]], 1), 8000, subtype='FLOAT')
    few.append(tmp_path/'stereo.wav')
    r = serve(ROOT/'examples'/'serve_onnx.py', model, *few, '--top', 2)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l.split('\t') for l in r.stdout.strip().splitlines()]
    assert [l[0] for l in lines] == list(map(str, few))
    for f, (_, l1, p1, l2, p2) in zip(few, lines):
        with learn.no_bar(): label, _, probs = learn.predict(f)
        want = sorted(zip(probs.tolist(), learn.dls.vocab), reverse=True)
        assert abs(float(p1) - want[0][0]) < 1e-4 and abs(float(p2) - want[1][0]) < 1e-4
        assert l1 == label or abs(want[0][0] - want[1][0]) < 1e-4
    sf.write(tmp_path/'at16k.wav', x, 16000)
    r = serve(ROOT/'examples'/'serve_onnx.py', model, few[0], tmp_path/'at16k.wav')
    assert r.returncode == 1 and r.stdout == ''
    assert f"{tmp_path/'at16k.wav'}: 16000 Hz, but the model expects 8000 Hz" in r.stderr

@pytest.mark.slow
@needs(ESC10)
def test_parity_on_shared_recordings_at_44k(exporter, tmp_path):
    "The esc50 preset at ESC-50's own 44.1 kHz: the 16 kHz recordings resampled by the learner, and for onnxruntime"
    data, _ = _esc10_subset(tmp_path/'esc10')
    learn = train(data, 'channel', True, 44100, tmp_path, spec='esc50')
    path = to_onnx(learn, tmp_path/'m.onnx')
    assert onnx_metadata(path)['sample_rate'] == 44100
    new = pd.read_csv(ESC10/'meta'/'esc50.csv').query('fold == 5').groupby('category').head(1)
    files = clips([ESC10/'audio'/f for f in new.filename], 5 * 16000, 16000, tmp_path/'clips')
    want = check_parity(learn, path, files, sr=44100)
    assert want.std(0).max() > 1e-3
