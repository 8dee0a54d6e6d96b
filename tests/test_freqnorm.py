import pickle, pytest, torch
from fastnorm.freqnorm import FreqBatchNorm, freq_instance_norm, RelaxedFreqNorm, FreqInstanceNorm, ConstantSpecNorm, FreqMixStyle
from fastnorm.spec import TensorSpec, SpecConfig
from fastnorm.stats import StatsRecorder

def test_freq_batchnorm_normalizes_each_bin_over_batch_and_time():
    # bin 0 holds 0,2 / 4,6 (mean 3, var 5), bin 1 holds 1 everywhere (var 0)
    x = torch.tensor([[[[0., 2.], [1., 1.]]], [[[4., 6.], [1., 1.]]]])
    m = FreqBatchNorm(2, eps=1e-12)
    m.bn.eps = 1e-12
    out = m(TensorSpec(x)).detach()
    s = 5 ** .5
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([[-3 / s, -1 / s], [1 / s, 3 / s]]))
    assert out[:, 0, 1].abs().max() == 0 and type(out) is torch.Tensor
    torch.testing.assert_close(m.bn.running_mean, torch.tensor([.3, .1]))  # momentum .1 from 0
    m.eval()
    y = m(x).detach()  # running statistics at evaluation
    assert float(y[0, 0, 0, 0]) == pytest.approx((0 - .3) / (.9 + .1 * 5 * 4 / 3 + 1e-12) ** .5, rel=1e-6)

def test_freq_batchnorm_learns_and_checks_shape():
    m = FreqBatchNorm(3, n_channels=2)
    m(torch.randn(4, 2, 3, 5)).pow(2).sum().backward()
    assert m.bn.weight.grad.shape == (6,)
    with pytest.raises(ValueError, match=r'made for 2 channel\(s\) x 3 bands, not a batch of shape \[4, 1, 3, 5\]'): m(torch.randn(4, 1, 3, 5))
    with pytest.raises(ValueError, match=r'expects a batch `\[B,C,F,T\]` \(shape \[2, 3, 5\] given\)'): m(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"`n_bands` must be an integer >= 1 \(0 given\)"): FreqBatchNorm(0)

def test_ifn_and_rfn_exact_values():
    x = torch.tensor([[[[1., 3.], [10., 30.]]]])  # one item, bins (1,3) and (10,30)
    ifn = freq_instance_norm(x, 0., eps=1e-12)
    torch.testing.assert_close(ifn, torch.tensor([[[[-1., 1.], [-1., 1.]]]]))
    m, v = 11., ((1 - 11) ** 2 + (3 - 11) ** 2 + (10 - 11) ** 2 + (30 - 11) ** 2) / 4
    ln = (x - m) / v ** .5
    torch.testing.assert_close(freq_instance_norm(x, 1., eps=1e-12), ln)
    torch.testing.assert_close(freq_instance_norm(x, .25, eps=1e-12), .25 * ln + .75 * ifn)
    torch.testing.assert_close(RelaxedFreqNorm(.25, eps=1e-12)(x), .25 * ln + .75 * ifn)

def test_ifn_is_per_item_and_gain_invariant_in_db():
    x = torch.randn(3, 2, 4, 9)
    shifted = x + torch.tensor([0., -20., 7.])[:, None, None, None]  # a gain per item, in dB
    torch.testing.assert_close(freq_instance_norm(shifted, .5), freq_instance_norm(x, .5), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(freq_instance_norm(x, .5)[1:2], freq_instance_norm(x[1:2], .5))
    for lam in (-.1, 1.5, True):
        with pytest.raises(ValueError, match=r'`lam` must be a finite number in \[0, 1\]'): FreqInstanceNorm(lam)

def test_freq_instance_norm_transform_keeps_type_and_cfg():
    cfg = SpecConfig(n_mels=4)
    out = FreqInstanceNorm(0.)(TensorSpec(torch.randn(2, 1, 4, 6) * 5 + 3, cfg=cfg))
    assert isinstance(out, TensorSpec) and out.cfg == cfg
    torch.testing.assert_close(out.mean(-1), torch.zeros(2, 1, 4), atol=1e-5, rtol=0)

def test_constant_norm_ast_recipe_divides_by_two_std():
    r = StatsRecorder((0, 1, 2, 3))
    x = torch.tensor([1., 3., 5., 7.]).reshape(1, 1, 2, 2)  # mean 4, population std sqrt(5)
    r.update(x)
    n = ConstantSpecNorm.from_recipe('ast', r)
    torch.testing.assert_close(n(TensorSpec(x)).as_subclass(torch.Tensor), (x - 4) / (2 * 5 ** .5))
    torch.testing.assert_close(n.decode(n(TensorSpec(x))).as_subclass(torch.Tensor), x)
    plain = ConstantSpecNorm(4., 2.)
    torch.testing.assert_close(plain(TensorSpec(x)).as_subclass(torch.Tensor), (x - 4) / 2)
    assert 'mean 4, 2 x std 2.236' in n.name
    with pytest.raises(ValueError, match=r"`recipe` must be one of \('ast', 'standard'\) \('beats2' given\)"): ConstantSpecNorm.from_recipe('beats2', r)
    with pytest.raises(ValueError, match=r"`std_mult` must be a positive number \(0 given\)"): ConstantSpecNorm(0., 1., std_mult=0)

def test_freq_mixstyle_exact_with_pinned_draws():
    x = torch.tensor([[[[0., 2.], [10., 10.]]], [[[4., 8.], [0., 2.]]]])  # item 0: mu (1, 10) sig (1, ~0); item 1: mu (6, 1) sig (2, 1)
    t = FreqMixStyle(p=1., eps=1e-12, draw={'lam': torch.tensor([.5, 1.]), 'perm': torch.tensor([1, 0])})
    out = t(TensorSpec(x), split_idx=0)
    # item 0, bin 0: normalized (-1, 1), mixed stats mu .5*1+.5*6 = 3.5, sig .5*1+.5*2 = 1.5
    torch.testing.assert_close(out[0, 0, 0].as_subclass(torch.Tensor), torch.tensor([2., 5.]))
    torch.testing.assert_close(out[1].as_subclass(torch.Tensor), x[1])  # lam 1 keeps the item's own statistics
    assert isinstance(out, TensorSpec)
    assert torch.equal(t(TensorSpec(x), split_idx=1), TensorSpec(x))  # validation: untouched

def test_freq_mixstyle_p_and_seed():
    x = TensorSpec(torch.randn(400, 1, 3, 8) * torch.rand(400, 1, 1, 1) * 5)
    a = FreqMixStyle(p=.3, seed=1)(x, split_idx=0)
    b = FreqMixStyle(p=.3, seed=1)(x, split_idx=0)
    assert torch.equal(a, b)
    changed = (a != x).flatten(1).any(1).float().mean()
    assert .2 < changed < .4
    none = FreqMixStyle(p=0., seed=1)(x, split_idx=0)
    assert torch.equal(none, x)
    with pytest.raises(ValueError, match=r"`alpha` must be a positive number \(0 given\)"): FreqMixStyle(alpha=0)
    with pytest.raises(ValueError, match=r"`p` must be a finite number in \[0, 1\] \(2 given\)"): FreqMixStyle(p=2)

def test_mixstyle_beta_draws_have_the_beta_mean_and_variance():
    t = FreqMixStyle(alpha=.3, seed=0)
    lam = t._beta(torch.zeros(1), 20000)
    a = .3
    assert abs(lam.mean() - .5) < .01 and abs(lam.var() - a * a / ((2 * a) ** 2 * (2 * a + 1))) < .01
    assert pickle.loads(pickle.dumps(t)).alpha == .3
