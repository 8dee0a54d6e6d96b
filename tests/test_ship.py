"Ship a learner: learn.export() -> load_learner() -> predict(...) in a fresh process, without training data or cache"
import os, shutil, subprocess, sys
from pathlib import Path
import torch, pytest
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
from fastnorm.data import esc50_dls, read_esc50_csv
from fastnorm.norm import FreqSpecNorm
from test_cache import write_variants

def tiny_model(n_out):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_out))

@pytest.fixture(scope='module')
def shipped(tiny_esc50, tmp_path_factory):
    "Learners trained on the fly and from the cache, exported; their predictions here; then dataset and cache deleted"
    tmp = tmp_path_factory.mktemp('ship')
    data = Path(shutil.copytree(tiny_esc50, tmp/'data'))
    files = write_variants(read_esc50_csv(data).path[0], tmp/'new')  # a copy, a longer and a shorter clip, elsewhere
    here, gone = {}, [data]
    for cache in (False, True):
        torch.manual_seed(0)
        dls = esc50_dls(data, bs=8, sr=8000, wave_norm=True, cache=cache, batch_tfms=[FreqSpecNorm()], num_workers=0,
                        progress=False)
        learn = Learner(dls, tiny_model(len(dls.vocab)), loss_func=CrossEntropyLossFlat(), path=tmp)
        with learn.no_bar(), learn.no_logging(): learn.fit(1)
        name = 'cached' if cache else 'fly'
        learn.export(f'{name}.pkl')
        norm = next(t for t in dls.train.after_batch.fs if isinstance(t, FreqSpecNorm))
        with learn.no_bar(): probs = learn.get_preds(dl=dls.test_dl(files))[0]
        here[name] = dict(probs=probs, mean=norm.mean, std=norm.std)
        if cache: gone.append(dls.train.cache.path)
    for d in gone: shutil.rmtree(d)
    return tmp, files, here

@pytest.mark.slow
def test_predict_after_load_learner_in_a_fresh_process(shipped):
    tmp, files, here = shipped
    assert not (tmp/'data').exists() and all(f.is_file() for f in files)
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    cmd = [sys.executable, str(Path(__file__).parent/'predict_worker.py'), str(tmp/'out.pt'), str(tmp/'fly.pkl'),
           str(tmp/'cached.pkl'), '--files', *map(str, files)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = torch.load(tmp/'out.pt')
    for name in ('fly', 'cached'):
        o = out[name]
        assert o['n'] == 32 * 32 and o['cfg']['sr'] == 8000  # statistics in the pickle: 32 clips x 32 frames per bin
        assert torch.equal(o['mean'], here[name]['mean']) and torch.equal(o['std'], here[name]['std'])
        want = here[name]['probs']
        for kind in ('path', 'str', 'audio'):
            torch.testing.assert_close(o[kind]['probs'], want, rtol=1e-4, atol=1e-5)  # as before export
            assert o[kind]['labels'] == [o['vocab'][i] for i in want.argmax(1)]
        torch.testing.assert_close(o['test_dl'], want, rtol=1e-4, atol=1e-5)
