"The worker of test_stats.py's two-process `all_reduce` test: imports only torch and fastnorm.stats, so it starts fast"
import os, torch
from fastnorm.stats import StatsRecorder

SIZES = (8, 8, 5, 8, 3, 7)

def make_batches():
    "log-mel-like float32 batches `[B,1,16,20]`, the same in every process"
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(b, 1, 16, 20, generator=g) * 8 - 60 + torch.linspace(-30, 30, 16)[:, None]) for b in SIZES]

def run(rank, world, port, out):
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    try:
        r = StatsRecorder((0,3))
        for i, x in enumerate(make_batches()):
            if i % world == rank: r.update(x)  # each rank reads its shard
        r.all_reduce()
        torch.save(dict(mean=r.mean, std=r.std, n=r.n, nb=r.n_batches), os.path.join(out, f'rank{rank}.pt'))
        dist.barrier()  # both ranks done before either tears gloo down (a rank leaving early can abort the other)
    finally: dist.destroy_process_group()
