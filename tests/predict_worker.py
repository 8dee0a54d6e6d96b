"""Run by test_ship.py in a fresh process, on a machine state without the dataset or the feature cache:
load exported learners and predict new files given as Path, str and AudioTensor, and through `test_dl`."""
import sys, torch
from pathlib import Path

def predictions(pkl, files):
    "What a deployed learner gives for `files`: `predict` on each as Path, str, AudioTensor; `get_preds` on `test_dl`"
    from fastai.learner import load_learner
    import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
    from fastnorm.audio import AudioTensor
    from fastnorm.norm import SpecNormalize
    learn = load_learner(pkl)
    norm = next(t for t in learn.dls.after_batch.fs if isinstance(t, SpecNormalize))
    with learn.no_bar():
        vocab = [str(v) for v in learn.dls.vocab]
        out = dict(mean=norm.mean, std=norm.std, cfg=norm.cfg.to_dict(), n=norm.stats.n, vocab=vocab)
        sr = norm.cfg.sr
        for kind, make in (('path', Path), ('str', str), ('audio', lambda f: AudioTensor.create(f, sr=sr))):
            res = [learn.predict(make(f)) for f in files]
            out[kind] = dict(labels=[str(r[0]) for r in res], probs=torch.stack([r[2] for r in res]))
        out['test_dl'] = learn.get_preds(dl=learn.dls.test_dl([Path(f) for f in files]))[0]
    return out

if __name__ == '__main__':
    out, *args = sys.argv[1:]
    files = args[args.index('--files') + 1:]
    torch.save({Path(p).stem: predictions(p, files) for p in args[:args.index('--files')]}, out)
