"SpecAugment batch transforms: value checks on tiny inputs, statistics over large batches, train/valid, seeding, errors"
import pickle
import numpy as np, pytest, torch
from fastnorm.spec import TensorSpec, SpecConfig
from fastnorm.augment import *

CFG = SpecConfig(sr=16000, n_fft=512, hop_length=256, n_mels=16)

def spec(B=4, C=1, F=16, T=40, seed=0):
    "A batch of positive values (never equal to a mask value of 0), carrying a config"
    g = torch.Generator().manual_seed(seed)
    return TensorSpec(torch.rand(B, C, F, T, generator=g) + 1., cfg=CFG)

def ramp(B=4, F=3, T=101):
    "Every row is its own time index: a warp's output is then its source positions"
    return TensorSpec(torch.arange(T, dtype=torch.float32).expand(B, 1, F, T).clone(), cfg=CFG)

def masked_rows(y): return (y == 0).all(-1).all(1)    # [B,F]: rows masked in every frame and channel
def masked_cols(y): return (y == 0).all(-2).all(1)    # [B,T]

def spans(m):
    "(start, width) of the single True run in each row of a bool [B,L] (width 0, start -1 when none)"
    w = m.sum(-1)
    s = torch.where(w > 0, m.float().argmax(-1), torch.full_like(w, -1))
    return s, w

ALL = [FreqMask(4, n_freq_mask=2), TimeMask(8, n_time_mask=2), TimeWarp(5), SpecAugment(4, 8, 2, 2, time_warp=5)]

@pytest.mark.parametrize('tfm', ALL, ids=lambda t: type(t).__name__)
def test_type_cfg_kept_input_untouched_valid_unchanged(tfm):
    x = spec()
    x0 = x.clone()
    y = tfm(x, split_idx=0)
    assert isinstance(y, TensorSpec) and y.cfg == CFG and y.shape == x.shape and y.dtype == x.dtype
    assert not torch.equal(y, x), "the transform must really apply on the training set"
    assert torch.equal(x, x0), "input mutated"
    assert tfm(x, split_idx=1) is x, "validation batches must pass through untouched"

@pytest.mark.parametrize('tfm', ALL[:2] + ALL[3:], ids=lambda t: type(t).__name__)
def test_masks_run_after_normalization_in_a_pipeline(tfm):
    "Listed first, a mask still runs after `SpecNormalize`: masked values are exactly 0, not (0 - mean) / std"
    from fasttransform import Pipeline
    from fastnorm.norm import SpecNormalize
    x = spec(B=8) + 5
    y = Pipeline([tfm, SpecNormalize(mean=5., std=2.)], split_idx=0)(x)
    assert (y == 0).sum() > 0 and not (y == -2.5).any()

def test_plain_tensors_pass_through():
    x = torch.rand(2, 1, 8, 10)
    assert FreqMask(2)(x, split_idx=0) is x  # only TensorSpec is augmented

def test_freq_mask_exact_on_tiny_input():
    x = spec(B=2, C=2, F=6, T=5)
    y = FreqMask(3, draw={'width': [[2], [0]], 'start': [[1], [4]]})(x, split_idx=0)
    exp = x.clone()
    exp[0, :, 1:3] = 0
    assert torch.equal(y, exp)  # item 0: rows 1 and 2 in both channels; item 1 (width 0) untouched

def test_time_mask_exact_with_mean_value():
    x = spec(B=2, F=4, T=6)
    y = TimeMask(3, mask_value='mean', draw={'width': 2, 'start': [[0], [4]]})(x, split_idx=0)
    exp = x.clone()
    exp[0, ..., 0:2] = x[0].mean()
    exp[1, ..., 4:6] = x[1].mean()
    assert torch.allclose(y, exp)

def test_freq_widths_and_starts_cover_their_ranges():
    B, F, v = 3000, 5, 16
    s, w = spans(masked_rows(FreqMask(F, seed=1)(spec(B, F=v, T=3), split_idx=0)))
    assert set(w.tolist()) == set(range(F + 1))             # f ~ U{0..F}, every value seen, none above
    full = s[w == F]
    assert full.min() == 0 and full.max() == v - F            # f0 ~ U{0..v-f}
    counts = torch.bincount(w, minlength=F + 1).float() / B
    assert (counts - 1 / (F + 1)).abs().max() < 0.04          # uniform widths

def test_time_width_capped_by_max_frac():
    B, tau = 3000, 40
    s, w = spans(masked_cols(TimeMask(50, max_frac=0.25, seed=2)(spec(B, F=2, T=tau), split_idx=0)))
    assert set(w.tolist()) == set(range(11))                  # min(T, 0.25*40) = 10
    assert s[w == 10].min() == 0 and s[w == 10].max() == tau - 10

def test_masked_fraction_matches_expectation():
    B, F, v = 4000, 8, 16
    m = masked_rows(FreqMask(F, seed=3)(spec(B, F=v, T=2), split_idx=0)).float().mean()
    assert abs(m - (F / 2) / v) < 0.015                        # E[f]/v = 4/16
    m = masked_rows(FreqMask(F, p=0.5, seed=4)(spec(B, F=v, T=2), split_idx=0)).float().mean()
    assert abs(m - 0.5 * (F / 2) / v) < 0.015
    # two independent time masks, t ~ U{0..T}, t0 ~ U{0..tau-t}: frame j is masked by one with probability
    # p_j = 1/(T+1) * sum_t #{t0 : t0 <= j < t0+t} / (tau-t+1), and by either with 1 - (1-p_j)^2 (enumerated exactly)
    T, tau = 10, 50
    mt = masked_cols(TimeMask(T, n_time_mask=2, seed=5)(spec(B, F=2, T=tau), split_idx=0)).float().mean()
    p = [sum(sum(1 for t0 in range(tau - t + 1) if t0 <= j < t0 + t) / (tau - t + 1) for t in range(T + 1)) / (T + 1) for j in range(tau)]
    assert abs(mt - sum(1 - (1 - pj)**2 for pj in p) / tau) < 0.015

def test_masks_independent_across_items():
    B = 4000
    _, w = spans(masked_rows(FreqMask(6, seed=6)(spec(B, F=16, T=2), split_idx=0)))
    a, b = w[0::2].float(), w[1::2].float()
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.06
    assert len(set(map(tuple, masked_rows(FreqMask(6, seed=7)(spec(64, F=16, T=2), split_idx=0)).tolist()))) > 15

def test_masks_never_cross_item_boundaries():
    x = spec(B=4, C=2, F=8, T=12)
    y = SpecAugment(8, 12, 3, 3, draw={'apply': [True, False, True, False]}, seed=0)(x, split_idx=0)
    assert torch.equal(y[1], x[1]) and torch.equal(y[3], x[3])
    for i in (0, 2):  # what changed is exactly full rows and full frames, the same in every channel
        m = y[i] == 0
        assert torch.equal(m[0], m[1])
        rows, cols = m[0].all(1), m[0].all(0)
        assert torch.equal(m[0], rows[:, None] | cols[None, :])
        assert torch.equal(y[i][~m], x[i][~m])

def test_warp_zero_shift_is_identity():
    x = spec(B=3, F=4, T=50)
    assert torch.equal(TimeWarp(10, draw={'shift': 0.})(x, split_idx=0), x)
    assert torch.equal(time_warp(x, torch.tensor([12., 20., 37.]), torch.zeros(3)), x)

def test_warp_keeps_ends_and_is_monotone():
    x = ramp(B=256, T=101)
    y = TimeWarp(30, seed=8)(x, split_idx=0)
    assert (y[..., 0] == 0).all() and (y[..., -1] == 100).all()
    assert (y.diff(dim=-1) >= 0).all()
    assert not torch.equal(y, x)

def test_warp_matches_reference_interpolation():
    T, c, w = 101, torch.tensor([30., 60., 50.]), torch.tensor([10., -25., 3.5])
    x = spec(B=3, F=2, T=T)
    y = time_warp(x, c, w)
    for i in range(3):  # the paper's piecewise-linear map: output frame d = c+w reads source frame c
        ci, di, j = c[i].item(), (c[i] + w[i]).item(), np.arange(T)
        src = np.where(j <= di, j * ci / di, ci + (j - di) * (T - 1 - ci) / (T - 1 - di))
        ref = np.stack([np.interp(src, j, r) for r in x[i, 0].numpy()])
        np.testing.assert_allclose(y[i, 0].numpy(), ref, atol=1e-5)
    assert warp_positions(T, c, w)[0, 40].item() == pytest.approx(30.)

def test_warp_draws_cover_range():
    W, B = 10, 2000
    pos = ramp(B=B, F=1, T=61)
    y = TimeWarp(W, seed=9)(pos, split_idx=0)[:, 0, 0]
    shift = (torch.arange(61.) - y).abs().amax(-1)  # largest displacement of each item's warp: |w|
    assert shift.max() <= W + 1e-4 and shift.max() > 0.95 * W and shift.min() < 0.05 * W

def test_seeded_reproducible():
    x = spec(B=8, F=16, T=60)
    a = SpecAugment(5, 10, 2, 2, time_warp=5, seed=0)
    b = SpecAugment(5, 10, 2, 2, time_warp=5, seed=0)
    assert torch.equal(a(x, split_idx=0), b(x, split_idx=0))
    assert torch.equal(a(x, split_idx=0), b(x, split_idx=0))        # the sequences stay in step
    assert not torch.equal(SpecAugment(5, 10, seed=1)(x, split_idx=0), SpecAugment(5, 10, seed=2)(x, split_idx=0))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(TimeMask(10, generator=g1)(x, split_idx=0), TimeMask(10, generator=g2)(x, split_idx=0))
    torch.manual_seed(4)
    r1 = FreqMask(5)(x, split_idx=0)
    torch.manual_seed(4)
    r2 = FreqMask(5)(x, split_idx=0)
    assert torch.equal(r1, r2)                                     # no seed: the global torch RNG, so `set_seed` works

def test_pickles_with_its_seed():
    t = SpecAugment(5, 10, seed=0)
    x = spec(B=4, F=16, T=60)
    t2 = pickle.loads(pickle.dumps(t))
    assert torch.equal(t(x, split_idx=0), t2(x, split_idx=0))

def test_batch_equals_items_given_the_same_parameters():
    x = spec(B=3, F=16, T=60)
    d = dict(center=[20., 30., 25.], shift=[5., -7., 0.], freq_width=[[3], [0], [5]], freq_start=[[2], [0], [10]],
             time_width=[[4], [9], [1]], time_start=[[0], [50], [30]])
    tf = lambda dd: SpecAugment(5, 10, time_warp=10, draw=dd)
    yb = tf(d)(x, split_idx=0)
    for i in range(3):
        yi = tf({k: [v[i]] for k, v in d.items()})(x[i:i + 1], split_idx=0)
        assert torch.allclose(yb[i:i + 1], yi)

def test_policies():
    t = SpecAugment(policy='LD')
    assert (t.time_warp, t.freq_mask_param, t.n_freq_mask, t.time_mask_param, t.max_frac, t.n_time_mask) == (80, 27, 2, 100, 1.0, 2)
    t = SpecAugment(policy='SM', freq_mask_param=5)  # explicit arguments win over the policy
    assert (t.time_warp, t.freq_mask_param, t.n_freq_mask, t.time_mask_param, t.max_frac, t.n_time_mask) == (40, 5, 2, 70, 0.2, 2)
    assert set(SPECAUGMENT_POLICIES) == {'LB', 'LD', 'SM', 'SS'}
    x = spec(B=4, F=32, T=63)          # shorter than LB's warp window: left unwarped, still masked
    y = SpecAugment(policy='LB', seed=0)(x, split_idx=0)
    changed = y != x
    assert torch.equal(y[changed], torch.zeros_like(y[changed]))

def test_adaptive_time_masks_scale_with_length():
    t = SpecAugment(0, 0, adaptive=True)
    assert t.time_masks(431) == (17, 17) and t.time_masks(1000) == (20, 40) and t.time_masks(20) == (0, 0)
    for tau in (100, 400):
        m = masked_cols(SpecAugment(0, 0, adaptive=True, seed=0)(spec(B=500, F=2, T=tau), split_idx=0))
        n, T = t.time_masks(tau)
        g = torch.Generator().manual_seed(1)   # the same law, simulated: overlapping masks make it less than n*T/2/tau
        w = (torch.rand(500, n, generator=g) * (T + 1)).long()
        s0 = (torch.rand(500, n, generator=g) * (tau - w + 1)).long()
        assert m.sum(-1).max() <= n * T and abs(m.float().mean() - span_mask(tau, s0, w).float().mean()) < 0.02

def test_errors_name_the_parameter():
    x = spec(B=2, F=16, T=40)
    with pytest.raises(ValueError, match=r"`freq_mask_param` = 20 exceeds the 16 frequency bins of the batch: use "
                                         r"freq_mask_param <= 16"):
        FreqMask(20)(x, split_idx=0)
    with pytest.raises(ValueError, match=r"`freq_mask_param`.*-1"): SpecAugment(-1, 5)
    with pytest.raises(ValueError, match=r"`time_warp` = 20 must be less than half the clip"): TimeWarp(20)(x, split_idx=0)
    assert torch.equal(TimeWarp(20, short='skip')(x, split_idx=0), x)
    with pytest.raises(ValueError, match=r"`time_mask_param` must be an integer >= 0 \(-3 given\)"): TimeMask(-3)
    with pytest.raises(ValueError, match=r"`n_time_mask` must be"): TimeMask(3, n_time_mask=1.5)
    with pytest.raises(ValueError, match=r"`time_warp` must be"): TimeWarp(-1)
    with pytest.raises(ValueError, match=r"`p` must be a finite number in \[0, 1\] \(1.5 given\)"): FreqMask(3, p=1.5)
    with pytest.raises(ValueError, match=r"`max_frac` must be a finite number in \[0, 1\] \(-0.1 given\)"):
        TimeMask(3, max_frac=-0.1)
    with pytest.raises(ValueError, match=r"`mask_value` must be a finite number or 'mean' \('median' given\)"): FreqMask(3, mask_value='median')
    with pytest.raises(ValueError, match=r"`policy` must be one of"): SpecAugment(policy='XL')
    with pytest.raises(ValueError, match=r"`short` must be"): TimeWarp(3, short='pad')
    with pytest.raises(ValueError, match=r"FreqMask expects a batch `\[B,C,F,T\]` \(shape \[1, 16, 40\] given\): use it as a batch transform"): FreqMask(3)(x[0], split_idx=0)

def test_mask_value_zero_is_not_the_mean():
    x = spec(B=2, F=8, T=10)
    y = FreqMask(8, mask_value=0., draw={'width': 8, 'start': 0})(x, split_idx=0)
    assert (y == 0).all()   # 0 means 0 (the dataset mean after normalization), never falls back to the item mean

def test_dataloaders_train_only():
    from fastai.data.core import Datasets
    items = [spec(B=1, F=16, T=40, seed=i)[0] for i in range(8)]
    dsets = Datasets(items, tfms=[[lambda o: o]], splits=[list(range(4)), list(range(4, 8))])
    dls = dsets.dataloaders(bs=4, after_batch=[SpecAugment(4, 8, 2, 2, time_warp=5)], shuffle=False, drop_last=False)
    (xt,), (xv,) = dls.train.one_batch(), dls.valid.one_batch()
    assert isinstance(xt, TensorSpec) and xt.cfg == CFG and (xt == 0).any()
    assert torch.equal(xv, torch.stack(items[4:]))

def test_show_augment(tmp_path):
    import matplotlib
    matplotlib.use('Agg')
    fig = show_augment(spec(B=1, F=16, T=60)[0], SpecAugment(4, 8, time_warp=5, seed=0), n=3, fname=tmp_path/'aug.png', title='t')
    axs = [a for a in fig.axes if a.has_data()]
    assert len(axs) == 4 and (tmp_path/'aug.png').stat().st_size > 1000
    assert [a.get_ylabel() for a in axs] == ['Hz'] * 4   # augmented panels keep the config: Hz and seconds axes

def test_warp_then_mean_masks_in_one_batch():
    x = spec(B=2, F=8, T=30)
    x0 = x.clone()
    d = dict(center=[10., 15.], shift=[3., -4.], freq_width=2, freq_start=[[1], [5]], time_width=0, time_start=0)
    y = SpecAugment(4, 4, time_warp=5, mask_value='mean', draw=d)(x, split_idx=0)
    w = time_warp(x, torch.tensor([10., 15.]), torch.tensor([3., -4.]))
    exp = w.clone()
    exp[0, :, 1:3] = w[0].mean()
    exp[1, :, 5:7] = w[1].mean()
    assert torch.allclose(y, exp) and torch.equal(x, x0)
