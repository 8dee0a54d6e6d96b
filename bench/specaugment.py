"""SpecAugment speed on a [64,1,128,431] float32 batch on the CPU, all ratios measured in one run.

Compares fastnorm's vectorized masks with torchaudio's `FrequencyMasking`/`TimeMasking(iid_masks=True)` and with
`batch.clone()`, and fastnorm's `TimeWarp` with a per-item `F.interpolate` loop and with the popular sparse_image_warp
port (zcaceres/spec_augment), reimplemented minimally below with `torch.linalg.solve` in place of the removed `torch.solve`.
Each timing is the best of several interleaved rounds (the machine is shared; the best round is the least disturbed),
medians are printed too. Run: `python bench/specaugment.py [--rounds 15]`.
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
        floors.append(fl.long()); ceils.append(fl.long() + 1)
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

def bench(fns, rounds, warm=3):
    "Interleaved rounds: {name: (best ms, median ms)} per call"
    for f, n in fns.values():
        for _ in range(warm): f()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, (f, n) in fns.items():
            t = time.perf_counter()
            for _ in range(n): f()
            times[k].append((time.perf_counter() - t) / n * 1e3)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}

def main(rounds=15, n_sparse=3, seed=0):
    torch.manual_seed(seed); random.seed(seed)
    B, C, Fq, T = 64, 1, 128, 431
    x = TensorSpec(torch.randn(B, C, Fq, T), cfg=SPEC_PRESETS['esc50'])
    xt = x.as_subclass(torch.Tensor)
    fa, ta = TA.FrequencyMasking(27, iid_masks=True), TA.TimeMasking(100, iid_masks=True)
    sa, fm, tm = SpecAugment(27, 100, 2, 2), FreqMask(27, n=2), TimeMask(100, n=2)
    tw = TimeWarp(80)
    r = bench({
        'clone': (lambda: xt.clone(), 20),
        'torchaudio 2F+2T': (lambda: ta(ta(fa(fa(xt)))), 3),
        'SpecAugment 2F+2T (fused)': (lambda: sa(x, split_idx=0), 10),
        'FreqMask(n=2) then TimeMask(n=2)': (lambda: tm(fm(x, split_idx=0), split_idx=0), 10),
        'TimeWarp(80)': (lambda: tw(x, split_idx=0), 5),
        'per-item interpolate loop': (lambda: interpolate_loop_warp(xt), 3),
    }, rounds)
    # the sparse_image_warp port: a few items, scaled to the batch
    one = lambda: [sparse_time_warp(xt[i, 0][None]) for i in range(n_sparse)]
    sp = bench({'sparse': (one, 1)}, max(3, rounds // 5), warm=1)['sparse']
    r['sparse_image_warp port (x64 from %d items)' % n_sparse] = (sp[0] / n_sparse * B, sp[1] / n_sparse * B)
    best = {k: v[0] for k, v in r.items()}
    sparse_key = [k for k in r if k.startswith('sparse')][0]
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, batch [64,1,128,431] float32 CPU, best (median) of {rounds} rounds\n")
    print('| operation | ms per batch, best | median |\n|---|---:|---:|')
    for k, (b_, m_) in r.items(): print(f'| {k} | {b_:.2f} | {m_:.2f} |')
    print('\n| ratio | measured | target |\n|---|---:|---:|')
    rows = [('torchaudio 2F+2T / SpecAugment 2F+2T (fused)', best['torchaudio 2F+2T'] / best['SpecAugment 2F+2T (fused)'], '>= 4x'),
            ('torchaudio 2F+2T / FreqMask+TimeMask (separate)', best['torchaudio 2F+2T'] / best['FreqMask(n=2) then TimeMask(n=2)'], '>= 4x'),
            ('SpecAugment 2F+2T (fused) / clone', best['SpecAugment 2F+2T (fused)'] / best['clone'], '<= 4x'),
            ('FreqMask+TimeMask (separate) / clone', best['FreqMask(n=2) then TimeMask(n=2)'] / best['clone'], '<= 4x'),
            ('torchaudio 2F+2T / clone', best['torchaudio 2F+2T'] / best['clone'], ''),
            ('per-item interpolate loop / TimeWarp', best['per-item interpolate loop'] / best['TimeWarp(80)'], '>= 2x'),
            ('sparse_image_warp port / TimeWarp', best[sparse_key] / best['TimeWarp(80)'], '>= 100x')]
    for name, v, tgt in rows: print(f'| {name} | {v:.1f}x | {tgt} |')
    return r

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=15)
    ap.add_argument('--n-sparse', type=int, default=3)
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's own choice)")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    main(a.rounds, a.n_sparse)
