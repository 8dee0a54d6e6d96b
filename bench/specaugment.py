"""SpecAugment speed on a [64,1,128,431] float32 batch on the CPU, all ratios measured in one run.

Compares fastnorm's vectorized masks with torchaudio's `FrequencyMasking`/`TimeMasking(iid_masks=True)` and with
`batch.clone()`, and fastnorm's `TimeWarp` with a per-item `F.interpolate` loop and with the popular sparse_image_warp
port (zcaceres/spec_augment), reimplemented minimally below with `torch.linalg.solve` in place of the removed `torch.solve`.
Each ratio comes from alternating single calls of its two sides (the machine is shared: whatever load there is hits both
alike); the table gives medians. Run: `python bench/specaugment.py [--pairs 40] [--threads N]`, where torchaudio loads
(torch 2.11 with torchaudio 2.11: fastnorm itself does not need torchaudio, this comparison does).
"""
import argparse, platform, random, statistics, time
import torch, torch.nn.functional as F
import torchaudio
import torchaudio.transforms as TA
from fastnorm.spec import TensorSpec, SPEC_PRESETS
from fastnorm.augment import FreqMask, TimeMask, TimeWarp, SpecAugment

# ---- the sparse_image_warp port (zcaceres/spec_augment, SparseImageWarp.ipynb), minimal and faithful in its algorithm:
# a polyharmonic spline (order 2) through the control points gives a dense flow over every pixel, then a 4-gather
# bilinear lookup. One spectrogram [1,F,T] per call, as in that repository's `time_warp`.
def _phi(r, order=2):  # r: squared distances
    return 0.5 * r * torch.log(torch.clamp(r, min=1e-10)) if order == 2 else torch.sqrt(torch.clamp(r, min=1e-10))

def _cross_sq(x, y):  # [b,n,d], [b,m,d] -> [b,n,m] squared distances
    return (x * x).sum(-1)[..., :, None] - 2 * x @ y.transpose(1, 2) + (y * y).sum(-1)[..., None, :]

def _solve_interpolation(c, f, order=2, eps=1e-7):
    b, n, d = c.shape
    A = _phi(_cross_sq(c, c), order)
    Bm = torch.cat([c, torch.ones(b, n, 1)], 2)
    left = torch.cat([A, Bm.transpose(1, 2)], 1)
    right = torch.cat([Bm, torch.randn(b, d + 1, d + 1) * eps], 1)  # the port's tiny noise instead of TF's zeros
    lhs, rhs = torch.cat([left, right], 2), torch.cat([f, torch.zeros(b, d + 1, f.shape[-1])], 1)
    X = torch.linalg.solve(lhs, rhs)  # was: X, LU = torch.solve(rhs, lhs)
    return X[:, :n], X[:, n:]

def _interpolate_spline(c, f, q, order=2):
    w, v = _solve_interpolation(c, f, order)
    return _phi(_cross_sq(q, c), order) @ w + torch.cat([q, torch.ones_like(q[..., :1])], 2) @ v

def _interpolate_bilinear(grid, q):  # grid [b,H,W,ch], q [b,N,2] (y, x)
    b, H, W, ch = grid.shape
    alphas, floors, ceils = [], [], []
    for dim, size in ((0, H), (1, W)):
        qd = q[..., dim]
        fl = torch.clamp(torch.floor(qd), 0, size - 2)
        floors.append(fl.long())
        ceils.append(fl.long() + 1)
        alphas.append(torch.clamp(qd - fl, 0, 1)[..., None])
    flat = grid.reshape(b * H * W, ch)
    off = (torch.arange(b) * H * W)[:, None]
    gather = lambda y, x: torch.gather(flat.t(), 1, off + y * W + x).reshape(b, -1, ch)
    tl, tr, bl, br = gather(floors[0], floors[1]), gather(floors[0], ceils[1]), gather(ceils[0], floors[1]), gather(ceils[0], ceils[1])
    top, bot = alphas[1] * (tr - tl) + tl, alphas[1] * (br - bl) + bl
    return alphas[0] * (bot - top) + top

def sparse_image_warp(img, src, dst, order=2):
    b, H, W = img.shape
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing='ij')
    grid = torch.stack([yy, xx], -1).reshape(1, H * W, 2)
    flows = _interpolate_spline(dst, dst - src, grid, order)
    return _interpolate_bilinear(img[..., None], grid - flows).reshape(b, H, W)

def sparse_time_warp(spec, W=80):
    "One spectrogram [1,F,T]: the port's time_warp (warp point taken as a time index, which the port meant)"
    y, T = spec.shape[1] // 2, spec.shape[2]
    point, dist = random.randrange(W, T - W), random.randrange(-W, W)
    src, dst = torch.tensor([[[y, point]]], dtype=torch.float32), torch.tensor([[[y, point + dist]]], dtype=torch.float32)
    return sparse_image_warp(spec, src, dst)

# ---- per-item interpolate loop: the common PyTorch time warp (ESPnet style), one item at a time
def interpolate_loop_warp(x, W=80):
    out, T = [], x.shape[-1]
    for i in range(x.shape[0]):
        c = int(torch.randint(W, T - W, ()))
        d = int(torch.randint(c - W, c + W, ())) + 1
        xi = x[i:i + 1]
        left = F.interpolate(xi[..., :c], size=(xi.shape[-2], d), mode='bilinear', align_corners=False)
        right = F.interpolate(xi[..., c:], size=(xi.shape[-2], T - d), mode='bilinear', align_corners=False)
        out.append(torch.cat([left, right], -1))
    return torch.cat(out)

def paired(fa, fb, k, warm=3):
    """Time `fa` and `fb` alternately, one call each, `k` times: (median ms of a, median ms of b, median of the per-pair ratios a/b).
    Load from other processes then hits both sides alike, which a shared machine needs."""
    for _ in range(warm):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(k):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append((t1 - t0) * 1e3)
        tb.append((t2 - t1) * 1e3)
    return statistics.median(ta), statistics.median(tb), statistics.median(a / b for a, b in zip(ta, tb))

def main(k=40, n_sparse=3, seed=0):
    torch.manual_seed(seed)
    random.seed(seed)
    B, C, Fq, T = 64, 1, 128, 431
    x = TensorSpec(torch.randn(B, C, Fq, T), cfg=SPEC_PRESETS['esc50'])
    xt = x.as_subclass(torch.Tensor)
    fa, ta = TA.FrequencyMasking(27, iid_masks=True), TA.TimeMasking(100, iid_masks=True)
    sa, fm, tm, tw = SpecAugment(27, 100, 2, 2), FreqMask(27, n_freq_mask=2), TimeMask(100, n_time_mask=2), TimeWarp(80)
    ours_fused, ours_sep = (lambda: sa(x, split_idx=0)), (lambda: tm(fm(x, split_idx=0), split_idx=0))
    audio, clone = (lambda: ta(ta(fa(fa(xt))))), (lambda: xt.clone())
    warp, loop = (lambda: tw(x, split_idx=0)), (lambda: interpolate_loop_warp(xt))
    sparse = lambda: [sparse_time_warp(xt[i, 0][None]) for i in range(n_sparse)]
    rows = [('torchaudio 2F+2T', 'SpecAugment(27,100,2,2), fused', paired(audio, ours_fused, k), '>= 4x'),
            ('torchaudio 2F+2T', 'FreqMask(27,n_freq_mask=2) then TimeMask(100,n_time_mask=2)', paired(audio, ours_sep, k), '>= 4x'),
            ('SpecAugment(27,100,2,2), fused', 'batch.clone()', paired(ours_fused, clone, k), '<= 4x'),
            ('FreqMask(27,n_freq_mask=2) then TimeMask(100,n_time_mask=2)', 'batch.clone()', paired(ours_sep, clone, k), '<= 4x'),
            ('per-item F.interpolate loop', 'TimeWarp(80)', paired(loop, warp, k), '>= 2x')]
    sp_a, sp_b, sp_r = paired(sparse, warp, max(5, k // 8), warm=1)
    s = B / n_sparse  # the port does one spectrogram per call: scale its time on `n_sparse` items to the batch
    rows.append((f'sparse_image_warp port (x{s:.3g} from {n_sparse} items)', 'TimeWarp(80)', (sp_a * s, sp_b, sp_r * s), '>= 100x'))
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()}, batch [64,1,128,431] float32 CPU; each ratio from {k} alternating pairs of calls\n")
    print('| A | B | A ms (median) | B ms (median) | A / B (median of pairs) | target |\n|---|---|---:|---:|---:|---:|')
    for a, b, (ma, mb, r), tgt in rows: print(f'| {a} | {b} | {ma:.2f} | {mb:.2f} | {r:.1f}x | {tgt} |')
    return rows

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--pairs', type=int, default=40, help='alternating pairs of calls per ratio')
    ap.add_argument('--n-sparse', type=int, default=3)
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's own choice)")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    main(a.pairs, a.n_sparse)
