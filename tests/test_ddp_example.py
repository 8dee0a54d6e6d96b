"""examples/ddp_train.py: one learner trained data-parallel by 2 gloo processes on the CPU, launched by torchrun and by
accelerate; FreqSpecNorm's statistics (sharded and all-reduced in `setups`) equal one process's"""
import importlib.util, math, os, socket, subprocess, sys
import pytest, torch
from conftest import ROOT

SCRIPT = ROOT/'examples'/'ddp_train.py'
BS = 8  # tiny_esc50's fold 2-5 hold 32 clips: 4 training batches, 2 per rank

def _free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

LAUNCHERS = {
    'torchrun': lambda: ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2'],
    # `accelerate launch --cpu` starts one process whatever --num_processes says (several need MPI):
    # --multi_gpu starts them through torchrun, and the script's --cpu puts them on gloo
    'accelerate': lambda: ['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines',
                           '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
                           '--main_process_port', str(_free_port())],
}

def _example():
    "examples/ddp_train.py as a module: its `main` called in this process is one process, with no group"
    spec = importlib.util.spec_from_file_location('ddp_train', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

def test_bad_arguments_fail_before_any_process_waits(tmp_path):
    main = _example().main
    with pytest.raises(FileNotFoundError, match='--data .*nope: no such folder'): main(data=str(tmp_path/'nope'))
    with pytest.raises(ValueError, match="is not in a layout fastnorm reads here: expected ESC-50's"): main(data=str(tmp_path))
    with pytest.raises(ValueError, match="`--arch` must be one of .*'resnet9' given"): main(arch='resnet9')
    assert not list(tmp_path.iterdir())

@pytest.fixture(scope='module')
def runs(tiny_esc50, tmp_path_factory):
    "Each launcher's run of the example: {launcher: (out folder, [rank 0's results, rank 1's])}"
    got = {}
    for name, launcher in LAUNCHERS.items():
        tmp = tmp_path_factory.mktemp(name)
        # a cold fastnorm home: rank 0 builds the feature cache while rank 1 waits; no user accelerate config
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'FASTNORM_HOME': str(tmp/'home'), 'HF_HOME': str(tmp/'hf'),
               'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
        cmd = [sys.executable, *launcher(), str(SCRIPT), '--data', str(tiny_esc50), '--bs', str(BS), '--epochs', '2',
               '--out', str(tmp/'out'), '--cpu', '--timeout', '120']  # a bounded wait at test scale
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, f"{name}: {r.stderr[-4000:]}"
        assert sorted(p.name for p in (tmp/'out').iterdir()) == ['learner.pkl', 'rank0.pt', 'rank1.pt']
        got[name] = tmp/'out', [torch.load(tmp/'out'/f'rank{k}.pt') for k in range(2)]
    return got

@pytest.fixture(scope='module')
def single(tiny_esc50):
    "The statistics one process computes on the same training set"
    from fastnorm.data import esc50_dls
    from fastnorm.dlstats import compute_stats
    dls = esc50_dls(tiny_esc50, fold=1, bs=BS, wave_norm=True, cache=True, progress=False)
    return compute_stats(dls.train, scope='freq', progress=False)

@pytest.mark.slow
@pytest.mark.parametrize('launcher', LAUNCHERS)
def test_every_rank_holds_the_single_process_statistics(runs, single, launcher):
    r0, r1 = runs[launcher][1]
    assert (r0['rank'], r0['world'], r1['rank'], r1['world']) == (0, 2, 1, 2)
    for k in ('mean', 'std'):
        assert r0[k].dtype == torch.float64 and r0[k].shape == (1, 1, 64, 1)  # one per mel bin of the quick preset
        assert torch.equal(r0[k], r1[k])
        assert (r0[k] - getattr(single, k).cpu()).abs().max() <= 1e-12
    assert r0['std'].min() > 0

@pytest.mark.slow
@pytest.mark.parametrize('launcher', LAUNCHERS)
def test_one_model_trains_across_the_ranks(runs, launcher):
    r0, r1 = runs[launcher][1]
    assert torch.equal(r0['weights_init'], r1['weights_init'])
    assert torch.equal(r0['weights'], r1['weights'])  # gradients averaged: one model
    assert not torch.equal(r0['weights'], r0['weights_init'])
    # fastai's recorder averages the ranks' losses
    assert math.isfinite(r0['train_loss']) and r0['train_loss'] == r1['train_loss']
    for r in (r0, r1): assert math.isfinite(r['loss']) and r['loss'] < r['loss_init']

@pytest.mark.slow
def test_torchrun_and_accelerate_train_the_same_model(runs):
    "Same seed, same ranks: the two launchers run the same data-parallel training"
    assert torch.equal(runs['torchrun'][1][0]['weights'], runs['accelerate'][1][0]['weights'])

@pytest.mark.slow
def test_rank0_exports_a_learner_with_the_statistics(runs):
    from fastai.learner import load_learner
    from fastnorm.norm import FreqSpecNorm
    out, (r0, _) = runs['torchrun']
    learn = load_learner(out/'learner.pkl')
    norm, = [t for t in learn.dls.after_batch.fs if isinstance(t, FreqSpecNorm)]
    assert torch.equal(norm.stats.mean.cpu(), r0['mean'])
    assert torch.equal(torch.cat([p.detach().flatten() for p in learn.model.parameters()]), r0['weights'])

@pytest.mark.slow
def test_one_process_without_a_launcher(tiny_esc50, single, tmp_path):
    "`python examples/ddp_train.py`: no process group, the same statistics, a learner trained and exported"
    _example().main(data=str(tiny_esc50), bs=BS, epochs=1, out=str(tmp_path), cpu=True)
    r = torch.load(tmp_path/'rank0.pt')
    assert (r['rank'], r['world']) == (0, 1) and (tmp_path/'learner.pkl').is_file()
    assert (r['mean'] - single.mean.cpu()).abs().max() <= 1e-12 and (r['std'] - single.std.cpu()).abs().max() <= 1e-12
    assert math.isfinite(r['train_loss']) and not torch.equal(r['weights'], r['weights_init'])
