"The worker of test_dlstats.py's two-process test: DataLoader statistics (on the fly, cached) under torch.distributed"
import os, torch

CASES = {'global': dict(scope='global'), 'freq': dict(scope='freq'), 'frac': dict(scope='freq', frac=0.5, seed=1),
         'n_batches': dict(scope='global', n_batches=3)}

def all_stats(path):
    """Every statistic the test compares, from `compute_stats` and from `setups`, for both cache modes (bs 6: a ragged
    last batch); no DataLoader workers: started by spawn here, each would import torch and fastai again"""
    from fastnorm.data import esc50_dls
    from fastnorm.dlstats import compute_stats
    from fastnorm.norm import FreqSpecNorm
    res = {}
    for cache in (False, True):
        dls = esc50_dls(path, bs=6, sr=8000, cache=cache, progress=False, num_workers=0)
        for name, kw in CASES.items(): res[cache, name] = compute_stats(dls, progress=False, **kw)
        t = FreqSpecNorm()
        esc50_dls(path, bs=6, sr=8000, cache=cache, batch_tfms=[t], progress=False, num_workers=0)
        res[cache, 'setups'] = t.stats
    return {k: dict(mean=r.mean, std=r.std, count=r.count, n_batches=r.n_batches) for k, r in res.items()}

def run(rank, world, port, path, out):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        torch.save(all_stats(path), os.path.join(out, f'rank{rank}.pt'))
        dist.barrier()  # both ranks done before either tears gloo down (a rank leaving early can abort the other)
    finally: dist.destroy_process_group()
