"""What adapting a trained learner to a new recording setup costs, against one validation epoch, side by side in one run.

The learner is `fastnorm compare`'s `channel` recipe (waveform norm, per-mel-bin statistics, the quick preset's
`xresnet18_tiny`) trained `--epochs` on folds 2-5 of the real ESC-10 (`../shared/data/esc10`; the embedded synthetic
dataset when it is absent), from a feature cache. The new setup's clips are fold 1's 80 clips through a -3 dB/octave
tilt, written as WAV files, as a user hands them to `adapt`. Timed, alternating round by round (the machine may be
shared), medians compared:

- validation epoch: `learn.validate()` on fold 1 (80 clips from the cache, through the batch transforms and network);
- predicting the new clips: `learn.get_preds` on a `test_dl` of the 80 files (decoding and log-mels included): the
  work any use of these clips has to do anyway;
- `adapt(learn, files, method)` for each method: the copy of the learner, the clips read and made into log-mels, the
  statistics (match: the training set's per-bin statistics too, read from its cache), the BatchNorm pass (bn).

    python bench/adapt.py                  # 5 rounds
    python bench/adapt.py --rounds 9 --epochs 2
"""
from __future__ import annotations
import os, platform, statistics, tempfile, time, warnings
from pathlib import Path
import numpy as np, soundfile as sf, torch
from fastcore.script import call_parse
from fastnorm import __version__
from fastnorm.adapt import ADAPT_METHODS, adapt
from fastnorm.data import esc50_dls
from fastnorm.synth import synth_esc50
from fastnorm.study.models import make_learner
from fastnorm.study.recipes import apply_recipe
from fastnorm.study.shift import parse_shift

ESC10 = Path(__file__).resolve().parents[2]/'shared'/'data'/'esc10'

def tilted(files, dest:Path, sr:int)->list:
    "Fold 1's clips through a -3 dB/octave tilt, as WAV files in `dest`"
    tilt, out = parse_shift('tilt:-3'), []
    for f in files:
        x, r = sf.read(f, dtype='float32')
        y = tilt(torch.from_numpy(x)[None, None], r)[0, 0].numpy()
        out.append(dest/Path(f).name)
        sf.write(out[-1], y, r, subtype='FLOAT')
    return out

def timed(f)->float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0

@call_parse
def main(rounds:int=5, # timed rounds (each times every path once, in turn)
         epochs:int=1, # training epochs of the learner (its accuracy does not change the cost)
         threads:int=2, # torch threads
        ):
    torch.set_num_threads(threads)
    data = ESC10 if ESC10.exists() else synth_esc50(None)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = esc50_dls(data, fold=1, spec='quick', wave_norm=True, cache=True, bs=32, progress=False)
        learn = make_learner(dls, 'xresnet18_tiny', False, apply_recipe(dls, 'channel'))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 3e-3)
    with tempfile.TemporaryDirectory() as tmp:
        files = tilted([str(f) for f in dls.valid.items['path']], Path(tmp), dls.valid.one_batch()[0].cfg.sr)
        paths = {'validation epoch': lambda: learn.validate(),
                 'predict the new clips': lambda: learn.get_preds(dl=learn.dls.test_dl(files)),
                 **{f'adapt {m}': (lambda m=m: adapt(learn, files, m)) for m in ADAPT_METHODS}}
        with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            for f in paths.values(): f()  # warm-up
            secs = {k: [] for k in paths}
            for _ in range(rounds):
                for k, f in paths.items(): secs[k].append(timed(f))
    base = statistics.median(secs['validation epoch'])
    print(f"fastnorm {__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; data {data.name}, {len(files)} new clips; "
          f"{rounds} rounds, medians")
    print(f"{'':24} {'seconds':>8} {'x validation epoch':>19}")
    for k, v in secs.items():
        m = statistics.median(v)
        print(f"{k:24} {m:8.3f} {m / base:19.2f}")
