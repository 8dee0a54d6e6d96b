"""Train ONE fastai learner on fastnorm's DataLoaders data-parallel, under `torch.distributed`.

    torchrun --nproc-per-node 2 examples/ddp_train.py --out runs/ddp                    # fastai's `distrib_ctx`
    accelerate launch --multi_gpu --num_processes 2 examples/ddp_train.py --out runs/ddp  # the same, through accelerate
    python examples/ddp_train.py --out runs/one                                         # one process, for comparison

Each rank is one process with the whole dataset; the recipe, in the order it must happen:

1. the process group first (gloo on the CPU, nccl on GPUs, one GPU per rank), before any DataLoaders exist;
2. rank 0 builds the dataset (the embedded one by default) and its feature cache while the others wait, then every rank
   opens the same cache;
3. every rank builds the DataLoaders with `FreqSpecNorm()`: its `setups` computes the per-frequency-bin statistics with
   `fastnorm.dlstats.compute_stats`, each rank reading its shard of whole training batches, then all-reduced, so every
   rank holds the statistics of the whole training set, equal to one process's;
4. `learn.distrib_ctx()` wraps the model in `DistributedDataParallel` (through accelerate's `Accelerator`) and each
   epoch's batches in fastai's `DistributedDL`: every rank trains on its share, gradients are averaged, and the weights
   stay identical on all ranks;
5. each rank saves what it holds to OUT/rank{K}.pt (statistics in float64, losses, weights); rank 0 exports the learner
   to OUT/learner.pkl (`load_learner` it to predict: the statistics travel inside it).

On the CPU (no GPU, or `--cpu`) the model keeps plain `BatchNorm` (`sync_bn=False`: "SyncBatchNorm layers only work
with GPU modules"; DDP copies rank 0's running statistics to the others at each forward), and fastai's `DistributedDL`,
which moves the shuffled indices to CUDA to broadcast them ("Found no NVIDIA driver"), gets a CPU broadcast.
`accelerate launch --cpu` starts ONE process (several CPU processes need `--mpirun_hostfile` and MPI): use
`--multi_gpu --num_processes N`, which starts N processes through torchrun, GPUs or not.
"""
from __future__ import annotations
import os
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
import torch, torch.distributed as dist
from fastcore.script import call_parse, store_true
from fastai.distributed import DistributedDL
from fastai.torch_core import set_seed
from fastnorm.checks import check_choice
from fastnorm.data import esc50_dls
from fastnorm.layouts import detect_layout
from fastnorm.norm import FreqSpecNorm
from fastnorm.study.models import ARCHS, make_learner
from fastnorm.synth import synth_esc50
from fastnorm.utils import atomic_path

def init_group(cpu:bool, timeout:float)->tuple:
    """(rank, world size, device): join the process group a launcher describes (`torchrun` and `accelerate launch` set
    WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); a plain `python` run is one process, with no group"""
    launched = 'WORLD_SIZE' in os.environ
    world, rank, local = (int(os.environ.get(k, d)) for k, d in (('WORLD_SIZE', 1), ('RANK', 0), ('LOCAL_RANK', 0)))
    device = torch.device('cpu') if cpu else torch.device('cuda', local)
    if not cpu: torch.cuda.set_device(device)
    if launched and not dist.is_initialized():
        # every collective after this one (barriers, the statistics' all-reduce, DDP's) fails after `timeout`
        dist.init_process_group('gloo' if cpu else 'nccl', timeout=timedelta(seconds=timeout),
                                **({} if cpu else dict(device_id=device)))
    return rank, world, device

def barrier():
    if dist.is_initialized(): dist.barrier()

class GlooDistributedDL(DistributedDL):
    "fastai's `DistributedDL` over a CPU (gloo) process group: its `_broadcast` moves the indices to CUDA, for nccl"
    def _broadcast(self, t, rank):
        t = torch.tensor(t, dtype=torch.long)
        dist.broadcast(t, rank)
        return t.tolist()

@contextmanager
def cpu_distributed(learn):
    """`learn`'s DataLoaders as `GlooDistributedDL`s for the duration of the block (`DistributedTrainer` keeps a loader
    that is a `DistributedDL` already), then the plain ones again"""
    plain = list(learn.dls.loaders)
    learn.dls.loaders = [GlooDistributedDL(dl) for dl in plain]
    try: yield learn
    finally: learn.dls.loaders = plain

def mean_loss(learn, dl)->float:
    "Mean loss of `learn.model` over every item of `dl`, in eval mode, in this process alone (no collective)"
    model = learn.model
    model.eval()
    tot, n = 0., 0
    with torch.no_grad():
        for xb, yb in dl:
            tot += float(learn.loss_func(model(xb), yb)) * len(yb)
            n += len(yb)
    return tot / n

def dataset(data:str)->Path:
    "The folder `--data` names: the embedded dataset (made on first use) for 'synth'"
    return synth_esc50(n_classes=5, clips_per_class=20, seconds=1.0) if data == 'synth' else Path(data)

def weights(model)->torch.Tensor: return torch.cat([p.detach().flatten().cpu() for p in model.parameters()])

@call_parse
def main(data:str='synth', # an ESC-50-layout folder, or 'synth': the embedded dataset (5 classes x 20 clips of 1 s)
         fold:int=1, # the validation fold
         epochs:int=2, # epochs of `fit_one_cycle`
         lr:float=3e-3, # its maximum learning rate
         bs:int=16, # batch size of each rank (the effective batch is bs x ranks)
         arch:str='xresnet18_tiny', # the network: one of `fastnorm.study.ARCHS`
         seed:int=0, # seeds the weights and the shuffling, the same on every rank
         out:str='runs/ddp', # folder for rank{K}.pt and (rank 0) learner.pkl
         cpu:store_true=False, # train on the CPU (gloo) even where GPUs are present
         timeout:float=1800., # seconds any collective may wait for the other ranks before failing
        ):
    "Train one learner data-parallel on fastnorm's DataLoaders, with FreqSpecNorm's statistics all-reduced in setups"
    check_choice('--arch', arch, ARCHS)
    if data != 'synth': detect_layout(data, 'esc50', what='--data')  # on every rank, before any waits for another
    cpu = cpu or not torch.cuda.is_available()
    rank, world, device = init_group(cpu, timeout)  # 1. the process group, before any DataLoaders
    out = Path(out)
    set_seed(seed, reproducible=True)  # before the DataLoaders: their shuffling draws from it
    # 2. the dataset and its feature cache, made by rank 0 alone (no statistics yet: they would need every rank)
    kw = dict(fold=fold, bs=bs, wave_norm=True, cache=True, progress=False, device=device)
    if rank == 0:
        esc50_dls(dataset(data), **kw)
        out.mkdir(parents=True, exist_ok=True)
    barrier()
    path = dataset(data)  # made by rank 0: every rank opens the same folder, and the same feature cache below
    # 3. the DataLoaders of every rank: FreqSpecNorm's setups all-reduces the statistics of the ranks' shards
    dls = esc50_dls(path, batch_tfms=[FreqSpecNorm(progress=False)], **kw)
    norm = next(t for t in dls.train.after_batch.fs if isinstance(t, FreqSpecNorm))
    learn = make_learner(dls, arch)
    # a fixed view of the training set, to measure the loss before and after in every process alike
    train_all = dls.train.new(shuffle=False, drop_last=False)
    loss0, w0 = mean_loss(learn, train_all), weights(learn.model)
    # 4. one model across the ranks
    on_gloo = cpu and dist.is_initialized()
    with cpu_distributed(learn) if on_gloo else nullcontext(), learn.distrib_ctx(sync_bn=not cpu, cpu=cpu):
        learn.fit_one_cycle(epochs, lr)
    # 5. what this rank holds
    res = dict(rank=rank, world=world, mean=norm.stats.mean.double().cpu(), std=norm.stats.std.double().cpu(),
               train_loss=float(learn.recorder.values[-1][0]), loss_init=loss0, loss=mean_loss(learn, train_all),
               weights_init=w0, weights=weights(learn.model))
    with atomic_path(out/f'rank{rank}.pt') as tmp: torch.save(res, tmp)
    if rank == 0: learn.export(out.absolute()/'learner.pkl')
    print(f"rank {rank}/{world}: train loss {res['train_loss']:.4f}; loss over the training set "
          f"{loss0:.4f} -> {res['loss']:.4f}", flush=True)
    barrier()
    if dist.is_initialized(): dist.destroy_process_group()
