import pytest, torch
from fastai.data.transforms import Normalize
from fastai.data.core import TfmdDL
from fasttransform import Transform
from fastnorm.spec import TensorSpec, SPEC_PRESETS
from fastnorm.stats import StatsRecorder
from fastnorm.dlstats import compute_stats
from fastnorm.norm import SpecNormalize, GlobalSpecNorm, FreqSpecNorm, InstanceSpecNorm, add_spec_norm
CFG = SPEC_PRESETS['quick']

def logmel(bs=6, f=16, t=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorSpec(torch.randn(bs, 1, f, t, generator=g) * 8 - 60 + torch.linspace(-30, 30, f)[:, None], cfg=CFG)

def stats(xs, dims):
    r = StatsRecorder(dims)
    for x in xs: r.update(x)
    return r

def test_stock_normalize_skips_tensorspec_ours_applies():
    x = logmel()
    assert torch.equal(Normalize(mean=torch.tensor(-60.), std=torch.tensor(20.))(x), x)  # why this module exists
    y = GlobalSpecNorm(-60., 20.)(x)
    assert isinstance(y, TensorSpec) and y.cfg is CFG
    assert torch.allclose(y, (x.as_subclass(torch.Tensor) + 60) / 20)

@pytest.mark.parametrize('cls,dims', [(FreqSpecNorm, (0,3)), (GlobalSpecNorm, (0,1,2,3))])
def test_normalized_training_set_has_zero_mean_unit_std(cls, dims):
    xs = [logmel(b, seed=i) for i, b in enumerate((8, 8, 5))]
    t = cls(stats(xs, (0,3)))  # GlobalSpecNorm pools per-channel statistics exactly
    ys = torch.cat([t(x).as_subclass(torch.Tensor) for x in xs]).double()
    m, s = ys.mean(dims), ys.std(dims, correction=0)
    if cls is FreqSpecNorm: assert m.numel() == 16
    assert float(m.abs().max()) < 1e-3 and float((s - 1).abs().max()) < 1e-3

def test_decodes_inverts_and_input_is_not_mutated():
    x = logmel()
    x0 = x.clone()
    t = FreqSpecNorm(stats([x], (0,3)))
    y = t(x)
    assert torch.equal(x, x0) and not torch.allclose(y, x)
    z = t.decode(y)
    assert isinstance(z, TensorSpec) and float((z - x).abs().max()) < 1e-4

def test_from_mean_std_with_axes():
    x = logmel()
    m, s = torch.linspace(-90, -30, 16), torch.full((16,), 8.)
    a = FreqSpecNorm(m, s)  # a vector fills the kept dims (C,F) right-aligned: per mel bin
    assert a.mean.shape == (1, 1, 16, 1)
    assert torch.allclose(a(x), (x.as_subclass(torch.Tensor) - m[:, None]) / 8)
    b = SpecNormalize(torch.tensor([-60.]), torch.tensor([20.]), axes=(0,2,3))  # the post's Normalize(mean, std, axes)
    assert b.mean.shape == (1, 1, 1, 1)
    c = FreqSpecNorm(m[None, None, :, None], s[None, None, :, None])
    assert torch.equal(c.mean, a.mean)

def test_channel_norm_needs_channel_stats_and_checks_args():
    g = stats([logmel()], (0,1,2,3))
    with pytest.raises(ValueError, match='use GlobalSpecNorm'): FreqSpecNorm(g)
    with pytest.raises(ValueError, match='needs both `mean` and `std`, a `StatsRecorder`, or neither'): FreqSpecNorm(torch.zeros(16))
    with pytest.raises(ValueError, match='not both'): GlobalSpecNorm(g, 1.)
    with pytest.raises(ValueError, match='`eps`'): GlobalSpecNorm(0., 1., eps=0)
    with pytest.raises(ValueError, match='same shape'): FreqSpecNorm(torch.zeros(16), torch.ones(8))
    with pytest.raises(ValueError, match='finite'): GlobalSpecNorm(float('nan'), 1.)

def test_zero_std_gets_eps_and_warning_never_inf():
    x = logmel()
    x[:, :, 3] = -100.  # a silent mel bin
    with pytest.warns(UserWarning, match='1 of 16 std values'):
        t = FreqSpecNorm(stats([x], (0,3)))
    y = t(x)
    assert torch.isfinite(y).all() and torch.equal(y[:, :, 3], torch.zeros_like(y[:, :, 3]))

def test_shape_and_settings_mismatch_are_errors(tmp_path):
    r = stats([logmel()], (0,3))
    r.save(tmp_path/'s.pt')
    t = FreqSpecNorm(StatsRecorder.load(tmp_path/'s.pt'))
    assert t.cfg == CFG
    with pytest.raises(ValueError, match=r'kept shape \[1, 1, 16, 1\] do not fit a batch of shape \[6, 1, 8, 20\]'): t(logmel(f=8))
    other = TensorSpec(logmel(), cfg=CFG.replace(hop_length=128))
    with pytest.raises(ValueError, match="other spectrogram settings.*hop_length"): t(other)

def test_parameters_move_with_dls_to():
    t = FreqSpecNorm(stats([logmel()], (0,3)))
    assert list(t.parameters) == ['mean', 'std']
    dl = TfmdDL([logmel(1)[0]] * 4, bs=2, after_batch=[t], num_workers=0)
    dl.to(torch.device('meta'))  # no GPU needed to see the tensors follow the DataLoader
    assert t.mean.device.type == 'meta' and t.std.device.type == 'meta'

def test_instance_norm_per_item():
    x = logmel()
    x[2] = -100.  # a silent item gives zeros, not NaN
    for per, dims in (('item', (1,2,3)), ('freq', (1,3))):
        y = InstanceSpecNorm(per)(x)
        assert isinstance(y, TensorSpec) and y.cfg is CFG and torch.isfinite(y).all()
        assert torch.equal(y[2], torch.zeros_like(y[2]))
        ok = y[[0,1,3,4,5]].as_subclass(torch.Tensor).double()
        assert float(ok.mean(dims).abs().max()) < 1e-5 and float((ok.std(dims, correction=0) - 1).abs().max()) < 1e-5
    with pytest.raises(ValueError, match=r"`per` must be one of \('item', 'freq'\) \('bins' given\)"): InstanceSpecNorm('bins')
    with pytest.raises(ValueError, match='`eps`'): InstanceSpecNorm(eps=float('nan'))

def test_instance_norm_per_freq_is_ifn():
    "One implementation: per item and frequency bin is `FreqInstanceNorm(0.)`, IFN (its eps added to the variance)"
    from fastnorm.freqnorm import FreqInstanceNorm, freq_instance_norm
    x = logmel()
    assert torch.equal(InstanceSpecNorm('freq', eps=1e-5)(x), FreqInstanceNorm(0.)(x))
    xt = x.as_subclass(torch.Tensor)
    std, mean = torch.std_mean(xt, 3, keepdim=True, correction=0)
    floored = (xt - mean) / std.clamp_min(1e-6)  # the std floor it had before: the same within float32 rounding here
    assert torch.allclose(InstanceSpecNorm('freq')(x).as_subclass(torch.Tensor), floored, rtol=1e-6, atol=1e-6)
    assert torch.equal(freq_instance_norm(x, 0., 1e-6), InstanceSpecNorm('freq')(x).as_subclass(torch.Tensor))

# ---- the fastai hook ----
class _Mask(Transform):
    "stands in for a SpecAugment transform after normalization"
    order = 100
    def encodes(self, x:TensorSpec): return x

@pytest.fixture
def dls(tiny_esc50):
    from fastnorm.data import esc50_dls
    return esc50_dls(tiny_esc50, bs=8, sr=8000, batch_tfms=[_Mask()])

def test_add_spec_norm_inserts_after_melspec_before_masks(dls):
    r = compute_stats(dls.train, scope='freq', progress=False)
    out = add_spec_norm(dls, norm='freq')
    assert out is dls
    for dl in dls.loaders:
        names = [type(t).__name__ for t in dl.after_batch.fs]
        assert names == ['MelSpec', 'FreqSpecNorm', '_Mask'], names
    t = dls.train.after_batch.fs[1]
    assert torch.equal(t.mean, r.mean.float()) and torch.equal(t.std, r.std.float())  # training-set statistics
    add_spec_norm(dls, norm='global')  # again: replaces, never normalizes twice
    assert [type(t).__name__ for t in dls.valid.after_batch.fs] == ['MelSpec', 'GlobalSpecNorm', '_Mask']
    x, _ = dls.valid.one_batch()
    assert isinstance(x, TensorSpec) and float(x.mean().abs()) < 1 and 0.3 < float(x.std()) < 3

def test_add_spec_norm_whole_training_set_and_show_batch(dls):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    add_spec_norm(dls, norm='freq')
    ys = torch.cat([b[0].as_subclass(torch.Tensor) for b in dls.train.new(shuffle=False, drop_last=False)]).double()
    assert float(ys.mean((0,3)).abs().max()) < 1e-3 and float((ys.std((0,3), correction=0) - 1).abs().max()) < 1e-3
    b = dls.valid.one_batch()
    raw = dls.valid.decode(b)[0]  # what show_batch draws: denormalized dB values
    assert float(raw.mean()) < -10 and float(raw.std()) > 5
    dls.show_batch(max_n=2)
    plt.close('all')

def test_add_spec_norm_instance_and_bad_norm(dls):
    add_spec_norm(dls, norm='instance')
    assert [type(t).__name__ for t in dls.train.after_batch.fs] == ['MelSpec', 'InstanceSpecNorm', '_Mask']
    with pytest.raises(ValueError, match=r"`norm` must be one of \('freq', 'global', 'instance', 'imagenet'\)"):
        add_spec_norm(dls, norm='item')

def test_imagenet_norm_scales_each_item_like_an_image():
    from fastnorm.norm import ImageNetSpecNorm
    x = TensorSpec(torch.stack([torch.linspace(-80, -20, 40).reshape(1, 4, 10), torch.full((1, 4, 10), -50.)]), cfg=SPEC_PRESETS['quick'])
    y = ImageNetSpecNorm()(x)
    assert isinstance(y, TensorSpec) and y.cfg == x.cfg
    assert y[0].min().item() == pytest.approx(-.449/.226, abs=1e-5) and y[0].max().item() == pytest.approx((1-.449)/.226, abs=1e-5)
    assert torch.allclose(y[1], torch.full_like(y[1], -.449/.226))  # a constant item: no division by zero
    assert torch.allclose(ImageNetSpecNorm().decodes(y)[0].flatten(), torch.linspace(0, 1, 40), atol=1e-5)

# ---- statistics in `setups`, like fastai's `Normalize()` ----
@pytest.mark.parametrize('cls,scope', [(FreqSpecNorm, 'freq'), (GlobalSpecNorm, 'global')])
def test_setups_stats_equal_compute_stats(tiny_esc50, cls, scope):
    from fastnorm.data import esc50_dls
    plain = esc50_dls(tiny_esc50, bs=8, sr=8000, wave_norm=True, batch_tfms=[_Mask()])
    ref = compute_stats(plain, scope=scope, progress=False)
    t = cls()
    assert t.mean is None and t.computed and 'computed in setups' in t.name
    dls = esc50_dls(tiny_esc50, bs=8, sr=8000, wave_norm=True, batch_tfms=[t, _Mask()])
    assert [type(f).__name__ for f in dls.valid.after_batch.fs] == ['AudioNormalize', 'MelSpec', cls.__name__, '_Mask']
    assert torch.equal(t.mean, ref.mean.float()) and torch.equal(t.std, ref.std.float())  # the same stream, the same numbers
    assert t.stats.n == ref.n and t.cfg == ref.cfg and t.axes == ref.red_dims
    x, _ = dls.valid.one_batch()
    assert isinstance(x, TensorSpec) and float(x.mean().abs()) < 1

def test_setups_with_a_hand_written_datablock_frac_and_n_batches(tiny_esc50):
    import pandas as pd
    from fastai.data.block import DataBlock, CategoryBlock
    from fastai.data.transforms import ColReader
    from fastnorm.audio import AudioBlock
    from fastnorm.spec import MelSpec
    from fastnorm.data import CrossValidationSplitter
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')
    def dblock(*tfms):
        return DataBlock(blocks=(AudioBlock(sr=8000, duration=1.0), CategoryBlock), get_x=ColReader('filename', pref=tiny_esc50/'audio'),
                         get_y=ColReader('category'), splitter=CrossValidationSplitter(1), batch_tfms=[MelSpec(sr=8000), *tfms])
    plain = dblock().dataloaders(df, bs=8, num_workers=0)
    for kw in (dict(frac=0.5, seed=3), dict(n_batches=1)):
        t = FreqSpecNorm(**kw)
        dblock(t).dataloaders(df, bs=8, num_workers=0)
        ref = compute_stats(plain, scope='freq', progress=False, **kw)
        assert t.stats.n_batches == ref.n_batches < 4 and torch.equal(t.mean, ref.mean.float()) and torch.equal(t.std, ref.std.float())

def test_setups_on_the_cache_uses_its_item_moments(tiny_esc50, monkeypatch):
    from fastnorm.data import esc50_dls
    ref = compute_stats(esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True), scope='freq', progress=False)
    def no_batches(self, *a, **k): raise AssertionError("the cached fast path read a batch")
    monkeypatch.setattr(StatsRecorder, 'update', no_batches)
    t = FreqSpecNorm()
    esc50_dls(tiny_esc50, bs=8, sr=8000, cache=True, batch_tfms=[t])
    assert torch.equal(t.mean, ref.mean.float()) and torch.equal(t.std, ref.std.float())

def test_setups_errors_reach_the_user(tiny_esc50):
    from fastnorm.data import esc50_dls
    class Broken(Transform):
        order = 50
        def encodes(self, x:TensorSpec): return x.no_such_attribute  # an AttributeError, which fasttransform's `setup` swallows
    with pytest.raises(RuntimeError, match="FreqSpecNorm could not compute its statistics.*AttributeError.*no_such_attribute") as e:
        esc50_dls(tiny_esc50, bs=8, sr=8000, batch_tfms=[Broken(), FreqSpecNorm()])
    assert isinstance(e.value.__cause__, AttributeError)

def test_without_statistics_encodes_says_how_to_get_them():
    with pytest.raises(ValueError, match=r"FreqSpecNorm has no statistics yet.*batch_tfms.*add_spec_norm"): FreqSpecNorm()(logmel())
    with pytest.raises(ValueError, match=r'needs both `mean` and `std`'): GlobalSpecNorm(std=1.)
    with pytest.raises(ValueError, match=r'`frac` must be a finite number in \(0, 1\] \(0 given\)'):
        FreqSpecNorm(frac=0)
    with pytest.raises(ValueError, match=r'`n_batches` must be an integer >= 1 \(0 given\)'): FreqSpecNorm(n_batches=0)
    t = GlobalSpecNorm(-60., 20.)
    t.setup(None)  # given statistics stay
    assert float(t.mean) == -60.

def test_a_normalizer_shared_by_two_dataloaders_warns(tiny_esc50):
    from fastnorm.data import esc50_dls
    t = GlobalSpecNorm()
    esc50_dls(tiny_esc50, fold=1, bs=8, sr=8000, batch_tfms=[t])
    with pytest.warns(UserWarning, match='held the statistics of another training set'):
        esc50_dls(tiny_esc50, fold=2, bs=8, sr=8000, batch_tfms=[t])
    assert torch.equal(t.mean, compute_stats(esc50_dls(tiny_esc50, fold=2, bs=8, sr=8000), progress=False).mean.float())

def test_add_spec_norm_uses_fastai_add_tfms(dls, monkeypatch):
    calls = []
    orig = type(dls).add_tfms
    monkeypatch.setattr(type(dls), 'add_tfms', lambda self, tfms, event, **kw: calls.append(event) or orig(self, tfms, event, **kw))
    add_spec_norm(dls, norm='global', n_batches=2)
    assert calls == ['after_batch']
    t = dls.train.after_batch.fs[1]
    assert t is dls.valid.after_batch.fs[1] and t.stats.n_batches == 2 and isinstance(t, GlobalSpecNorm)

# ---- no silent skip ----
def test_other_float_batches_are_normalized_or_an_error():
    from fastai.torch_core import TensorImage, TensorCategory
    from fastnorm.audio import AudioTensor
    x = logmel()
    t = FreqSpecNorm(stats([x], (0,3)))
    want = t(x).as_subclass(torch.Tensor)
    for other in (x.as_subclass(torch.Tensor), TensorImage(x.as_subclass(torch.Tensor))):
        y = t(other)
        assert type(y) is type(other) and torch.equal(y.as_subclass(torch.Tensor), want)
        assert torch.allclose(t.decode(y).as_subclass(torch.Tensor), other.as_subclass(torch.Tensor), atol=1e-4)
    with pytest.raises(ValueError, match=r"FreqSpecNorm got a TensorImage of shape \[6, 3, 32, 32\].*TensorSpec\(x, cfg="):
        t(TensorImage(torch.rand(6, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"FreqSpecNorm got a Tensor of shape \[6, 16, 20\]"): t(torch.rand(6, 16, 20))
    with pytest.raises(ValueError, match=r"waveform batch \(AudioTensor.*put MelSpec before it"): t(AudioTensor(torch.rand(6, 1, 800), sr=8000))
    y = TensorCategory(torch.tensor([0, 2, 1]))
    assert t(y) is y and t((x, y))[1] is y  # targets are left alone
    ints = torch.zeros(6, 1, 16, 20, dtype=torch.long)
    assert t(ints) is ints

@pytest.mark.parametrize('cls', [InstanceSpecNorm, 'imagenet'])
def test_per_item_normalizers_handle_other_float_batches(cls):
    from fastai.torch_core import TensorImage, TensorCategory
    from fastnorm.norm import ImageNetSpecNorm
    t = ImageNetSpecNorm() if cls == 'imagenet' else cls()
    x = logmel()
    img = TensorImage(x.as_subclass(torch.Tensor))
    y = t(img)
    assert type(y) is TensorImage and torch.equal(y.as_subclass(torch.Tensor), t(x).as_subclass(torch.Tensor))
    with pytest.raises(ValueError, match=rf"{type(t).__name__} got a Tensor of shape \[6, 16, 20\] and is not \[B,C,F,T\]"):
        t(torch.rand(6, 16, 20))
    c = TensorCategory(torch.tensor([1]))
    assert t(c) is c

def test_nan_is_not_a_positive_number():
    from fastnorm.norm import ImageNetSpecNorm
    from fastnorm.freqnorm import FreqInstanceNorm, FreqMixStyle, RelaxedFreqNorm, freq_instance_norm
    nan = float('nan')
    for make in (lambda: GlobalSpecNorm(0., 1., eps=nan), lambda: ImageNetSpecNorm(eps=nan), lambda: FreqMixStyle(eps=nan),
                 lambda: FreqInstanceNorm(eps=nan), lambda: RelaxedFreqNorm(eps=nan), lambda: freq_instance_norm(logmel(), eps=nan)):
        with pytest.raises(ValueError, match=r'`eps` must be a positive number \(nan given\)'): make()

def test_add_spec_norm_reads_its_registry(dls, monkeypatch):
    "`norm` is a key of `SPEC_NORMS`: a new normalization is its transform plus one entry, and the error lists them"
    from fastnorm.norm import SPEC_NORMS, SpecNormKind, ImageNetSpecNorm
    assert list(SPEC_NORMS) == ['freq', 'global', 'instance', 'imagenet']
    monkeypatch.setitem(SPEC_NORMS, 'wide', SpecNormKind(lambda stats, eps, **kw: ImageNetSpecNorm(eps=eps * 10), 'x'))
    add_spec_norm(dls, norm='wide', eps=.5)
    tfm = [t for t in dls.train.after_batch.fs if isinstance(t, ImageNetSpecNorm)]
    assert len(tfm) == 1 and tfm[0].eps == 5.
    with pytest.raises(ValueError, match=r"`norm` must be one of \('freq', 'global', 'instance', 'imagenet', 'wide'\)"):
        add_spec_norm(dls, norm='tall')
