"Adapting a trained learner to a new recording setup: `BandMatch`, `band_stats`, `adapt_bn`, `adapt` and its export"
import warnings
from pathlib import Path
import numpy as np, pytest, soundfile as sf, torch
from fastai.vision.all import set_seed, Learner
from fastnorm.all import *
from fastnorm.adapt import ADAPT_METHODS, MIN_CLIPS, BandMatch, band_stats, frame_mask, adapt_bn, adapt, signal_mask
from fastnorm.study.models import make_learner

def _rec(x):
    r = StatsRecorder((0, 3))
    r.update(x)
    return r

def test_match_of_a_linear_filter_recovers_the_training_statistics():
    "New clips = the training log-mel through a per-bin gain and offset: matched, their statistics are the training's"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 1, 8, 50, generator=g, dtype=torch.float64) * torch.linspace(2, 9, 8)[:, None] - 40
    a, b = torch.linspace(.5, 2., 8)[:, None], torch.linspace(-12, 6, 8)[:, None]
    new = x * a + b  # a microphone: an offset per band in dB (and a per-band contrast)
    tfm = BandMatch.fit(_rec(x), _rec(new), std_floor=.1)
    y = tfm(TensorSpec(new.float()))
    s = _rec(y.as_subclass(torch.Tensor).double())
    torch.testing.assert_close(s.mean, _rec(x).mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(s.std, _rec(x).std, atol=1e-4, rtol=1e-5)
    m = BandMatch.fit(_rec(x), _rec(new), mean_only=True)  # mean only: the offset goes, the contrast stays
    ym = m(TensorSpec(new.float())).as_subclass(torch.Tensor).double()
    torch.testing.assert_close(_rec(ym).mean, _rec(x).mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(_rec(ym).std, _rec(new).std, atol=1e-4, rtol=1e-5)

def test_match_before_fitted_statistics_is_replacing_them():
    "Matched, then normalized by the training statistics: the same as normalizing by the new clips' own statistics"
    g = torch.Generator().manual_seed(1)
    train = torch.randn(12, 1, 6, 30, generator=g) * 8 - 30
    new = train * .7 + torch.linspace(-6, 3, 6)[:, None]
    bm = BandMatch.fit(_rec(train), _rec(new), std_floor=.01)
    got = FreqSpecNorm(_rec(train))(bm(TensorSpec(new))).as_subclass(torch.Tensor)
    want = FreqSpecNorm(_rec(new))(TensorSpec(new)).as_subclass(torch.Tensor)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)

def test_the_floor_holds_on_a_band_limited_target():
    "Bands the new device leaves silent (constant) get at most 1/std_floor of gain, and stay finite"
    x = torch.randn(8, 1, 6, 40) * 10 - 30
    new = x.clone()
    new[:, :, 3:] = -100.  # band-limited: the top 3 bins silent, std 0
    tfm = BandMatch.fit(_rec(x), _rec(new), std_floor=.25)
    assert torch.all(tfm.std[0, 0, 3:, 0] == .25) and torch.allclose(tfm.std[0, 0, :3, 0], torch.ones(3), atol=1e-5)
    y = tfm(TensorSpec(new)).as_subclass(torch.Tensor)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, :, 3:].mean((0, 1, 3)), _rec(x).mean.float()[0, 0, 3:, 0], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match='std_floor'): BandMatch.fit(_rec(x), _rec(new), std_floor=0)
    with pytest.raises(ValueError, match='different spectrograms'): BandMatch.fit(_rec(x), _rec(new[:, :, :4]))

def _srec(x, cfg):
    r = StatsRecorder((0, 3))
    r.update(TensorSpec(x, cfg=cfg), mask=signal_mask(x, cfg))
    return r

@pytest.mark.parametrize('top_db', [None, 60.])
def test_match_keeps_the_floor_and_its_statistics_leave_it_out(top_db):
    "Zero padding and digital silence sit at the dB floor: matching leaves them there, and no statistic counts them"
    from dataclasses import replace
    from fastnorm.spec import spec_config
    cfg = replace(spec_config('quick'), n_mels=6, top_db=top_db)
    g = torch.Generator().manual_seed(2)
    train = torch.randn(8, 1, 6, 40, generator=g) * 6 - 30
    new = train * .5 - 10
    new[:, 0, 0, 0] = new.amax((1, 2, 3)) + 1  # each item's maximum where no floor will be written
    floor = -100. if top_db is None else new.amax((1, 2, 3), keepdim=True) - top_db
    new[:, :, :, 30:] = floor if top_db is None else floor.expand(-1, -1, -1, 10)  # padding: the last 10 frames
    new[:, :, 5] = floor if top_db is None else floor[..., 0]  # and one band silent throughout
    rec = _srec(new, cfg)
    assert rec.count[0, 0, :5, 0].tolist() == [8 * 30] * 5 and rec.count[0, 0, 5, 0] == 0
    torch.testing.assert_close(rec.mean[0, 0, :5, 0].float(), new[:, :, :5, :30].mean((0, 1, 3)), atol=1e-4, rtol=0)
    tfm = BandMatch.fit(_srec(train, cfg), rec, std_floor=.1)
    assert tfm.std[0, 0, 5, 0] == 1 and tfm.mean[0, 0, 5, 0] == 0  # a band never seen is left as it is
    y = tfm(TensorSpec(new, cfg=cfg))
    assert type(y) is TensorSpec and torch.isfinite(y).all()
    torch.testing.assert_close(y[..., 30:], TensorSpec(new[..., 30:], cfg=cfg))  # the floor stays where it was
    torch.testing.assert_close(y[:, :, :5, :30].mean((0, 1, 3)), train[:, :, :5].mean((0, 1, 3)), atol=.2, rtol=0)
    m = tfm.to_module()  # the module training runs is the one the export runs
    torch.testing.assert_close(m(new), y.as_subclass(torch.Tensor))

def test_frame_mask_leaves_out_padding():
    m = frame_mask(torch.tensor([1000, 400, 5000]), n=1000, T=5, hop=256, pad='end')  # centres 0, 256, ..., 1024
    assert m.shape == (3, 1, 1, 5)
    assert m[:, 0, 0].tolist() == [[True] * 4 + [False], [True, True, False, False, False], [True] * 4 + [False]]
    b = frame_mask(torch.tensor([400]), n=1000, T=5, hop=256, pad='both')  # signal in samples 300 .. 699
    assert b[0, 0, 0].tolist() == [False, True, True, False, False]

def test_adapt_bn_changes_only_batchnorm_statistics():
    set_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.LazyLinear(3))
    model(torch.randn(2, 1, 8, 8))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [torch.randn(8, 1, 8, 8) * 3 + 5 for _ in range(4)]
    assert adapt_bn(model, batches) == 4
    after = model.state_dict()
    for k, v in before.items():
        if 'running' in k or 'num_batches' in k: continue
        assert torch.equal(v, after[k]), k  # weights, biases, affine parameters untouched
    assert not torch.allclose(before['1.running_mean'], after['1.running_mean'])
    assert not model.training and model[1].momentum == .1
    want = torch.stack([model[0](b).mean((0, 2, 3)) for b in batches]).mean(0)  # the average of the batch means
    torch.testing.assert_close(after['1.running_mean'], want.detach(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match='no BatchNorm'): adapt_bn(torch.nn.Linear(2, 2), batches)

@pytest.fixture(scope='module')
def trained(tiny_esc50, tmp_path_factory):
    "A `none` (no waveform norm) and a `channel` learner with a FreqBatchNorm stem, one epoch on the tiny dataset"
    out = {}
    for name, wave, tfms in (('none', False, []), ('channel', True, [FreqSpecNorm(progress=False)])):
        set_seed(0, reproducible=True)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            dls = esc50_dls(tiny_esc50, bs=8, sr=8000, wave_norm=wave, cache=False, num_workers=0, progress=False,
                            batch_tfms=tfms)
            learn = make_learner(dls, 'xresnet18_tiny', stem=FreqBatchNorm(dls.one_batch()[0].shape[2]))
            learn.path = tmp_path_factory.mktemp(name)
            with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
        out[name] = learn
    return out

def _gained(files, db, dest):
    dest.mkdir(exist_ok=True)
    out = []
    for f in files:
        x, sr = sf.read(f, dtype='float32')
        out.append(dest/Path(f).name)
        sf.write(out[-1], x * 10 ** (db / 20), sr, subtype='FLOAT')
    return out

def test_adapt_match_on_a_gain_recovers_the_training_statistics(trained, tmp_path):
    "Without waveform norm, a gain is an offset in every band: matched on the gained training clips, the statistics"
    learn = trained['none']
    files = [str(f) for f in learn.dls.train.items['path']]
    new = adapt(learn, _gained(files, -12, tmp_path/'quiet'), 'match')
    tfm = next(t for t in new.dls.valid.after_batch.fs if isinstance(t, BandMatch))
    torch.testing.assert_close(tfm.std, torch.ones_like(tfm.std), atol=2e-3, rtol=0)
    assert abs(float(tfm.mean.median()) + 12) < .05  # mean_new - mean_train: the gain in dB, in every band
    train = band_stats(learn.dls.train)
    y = TensorSpec(train.mean.float().expand(1, 1, -1, 3) - 12)
    torch.testing.assert_close(tfm(y).as_subclass(torch.Tensor), train.mean.float().expand(1, 1, -1, 3), atol=.1,
                               rtol=0)
    assert not any(isinstance(t, BandMatch) for t in learn.dls.valid.after_batch.fs)  # the original is unchanged
    assert new.deploy_meta == {'adapted': 'match', 'adapt_clips': str(len(files))}

def test_adapt_bn_leaves_the_original_and_the_weights(trained, tmp_path):
    learn = trained['channel']
    files = [str(f) for f in learn.dls.valid.items['path']][:MIN_CLIPS]
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    new = adapt(learn, _gained(files, 0, tmp_path/'same'), 'bn')
    for k, v in learn.model.state_dict().items(): assert torch.equal(v, before[k]), k
    changed = [k for k, v in new.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all('running' in k or 'num_batches' in k for k in changed)
    assert any(k.startswith('0.bn.running') for k in changed)  # the FreqBatchNorm stem's statistics too

def test_adapt_refuses_too_few_clips_and_survives_silence(trained, tmp_path):
    learn = trained['channel']
    files = [str(f) for f in learn.dls.valid.items['path']]
    with pytest.raises(ValueError, match=f'at least {MIN_CLIPS} .*\\(3 given\\)'): adapt(learn, files[:3])
    with pytest.raises(ValueError, match='method'): adapt(learn, files, method='tent')
    with pytest.raises(FileNotFoundError, match='nope'): adapt(learn, tmp_path/'nope')
    (tmp_path/'silent').mkdir()
    for i in range(MIN_CLIPS): sf.write(tmp_path/'silent'/f'{i}.wav', np.zeros(8000, np.float32), 8000)
    for method in ADAPT_METHODS:
        new = adapt(learn, tmp_path/'silent', method)
        with new.no_bar(): p = new.get_preds(dl=new.dls.test_dl(files[:4]))[0]
        assert torch.isfinite(p).all(), method

@pytest.mark.slow
def test_adapted_learner_exports_predicts_and_goes_to_onnx(trained, tmp_path):
    pytest.importorskip('onnxruntime')
    import onnxruntime as ort
    from fastai.learner import load_learner
    learn = trained['channel']
    files = [str(f) for f in learn.dls.valid.items['path']]
    shifted = _gained(files, 0, tmp_path/'new')
    new = adapt(learn, shifted, 'match+bn')
    new.export(tmp_path/'adapted.pkl')
    back = load_learner(tmp_path/'adapted.pkl')
    assert any(isinstance(t, BandMatch) for t in back.dls.after_batch.fs)
    with back.no_bar(): want = back.predict(files[0])[2].numpy()
    with new.no_bar(): np.testing.assert_allclose(new.predict(files[0])[2].numpy(), want, atol=1e-5)
    to_onnx(back, tmp_path/'adapted.onnx')
    meta = onnx_metadata(tmp_path/'adapted.onnx')
    assert meta['adapted'] == 'match+bn' and meta['adapt_clips'] == str(len(files))
    x, _ = sf.read(files[0], dtype='float32')
    got = ort.InferenceSession(str(tmp_path/'adapted.onnx')).run(None, {'waveform': x[None]})[0][0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

@pytest.mark.slow
def test_cli_adapts_an_exported_learner(trained, tmp_path, monkeypatch, capsys):
    "`fastnorm adapt`: a learner file and a folder in, the adapted learner (and ONNX file) out; errors name the problem"
    import sys
    from fastai.learner import load_learner
    from fastnorm.cli import main
    learn = trained['channel']
    learn.export(tmp_path/'l.pkl')
    files = [str(f) for f in learn.dls.valid.items['path']]
    _gained(files, -6, tmp_path/'new')
    def run(*args):
        monkeypatch.setattr(sys, 'argv', ['fastnorm', 'adapt', *map(str, args)])
        main()
    run(tmp_path/'l.pkl', tmp_path/'new', '--method', 'match', '--out', tmp_path/'a.pkl')  # stats from FreqSpecNorm
    assert capsys.readouterr().out.strip() == str(tmp_path/'a.pkl')
    back = load_learner(tmp_path/'a.pkl')
    assert back.deploy_meta['adapted'] == 'match' and any(isinstance(t, BandMatch) for t in back.dls.after_batch.fs)
    with pytest.raises(SystemExit, match='at least 8'):
        run(tmp_path/'l.pkl', files[0], '--out', tmp_path/'b.pkl')
    with pytest.raises(SystemExit, match='learner file not found'):
        run(tmp_path/'none.pkl', tmp_path/'new', '--out', tmp_path/'b.pkl')
    trained['none'].export(tmp_path/'n.pkl')
    with pytest.raises(SystemExit, match='no training data.*train_stats'):
        run(tmp_path/'n.pkl', tmp_path/'new', '--out', tmp_path/'b.pkl')
    band_stats(trained['none'].dls.train).save(tmp_path/'train.pt')
    run(tmp_path/'n.pkl', tmp_path/'new', '--out', tmp_path/'b.pkl', '--train-stats', tmp_path/'train.pt')
    assert (tmp_path/'b.pkl').is_file()
