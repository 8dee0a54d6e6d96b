"""What shipping a learner costs, measured side by side in one run: `predict` on a new file with a learner trained on the
fly against one trained from the feature cache (which computes files it does not hold), both after `load_learner`; the
exported pickle's size; and that both ways give the same spectrogram of a new file.

    python bench/ship.py            # the embedded dataset's default size (about a minute on a 2-core CPU)
    python bench/ship.py --quick    # a smoke run
"""
from __future__ import annotations
import platform, shutil, sys, tempfile, time
from pathlib import Path
import numpy as np, soundfile as sf, torch
from fastcore.script import call_parse
from fastai.learner import Learner, load_learner
from fastai.losses import CrossEntropyLossFlat
import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
from fastnorm import __version__
from fastnorm.synth import synth_esc50
from fastnorm.data import esc50_dls, read_esc50_csv
from fastnorm.norm import FreqSpecNorm

def tiny_model(n_out):
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, n_out))

@call_parse
def main(quick:bool=False, # a small smoke run, numbers not for BENCHMARKS.md
         reps:int=9, # timing repetitions (the fastest is reported)
        ):
    "Train one epoch both ways, export, load, and time `predict` on a new, longer clip"
    print(f"fastnorm {__version__}, torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, python {sys.version.split()[0]}")
    tmp = Path(tempfile.mkdtemp())
    try:
        kw = dict(clips_per_class=5, seconds=1.0) if quick else {}
        path = synth_esc50(**kw)
        x, sr = sf.read(read_esc50_csv(path).path[0], dtype='float32')
        new = tmp/'new.wav'
        sf.write(new, np.concatenate([x[::-1], x, x[::-1]]), sr, subtype='FLOAT')  # 3x the training length: centre-cropped
        res, specs = {}, {}
        for cache in (False, True):
            dls = esc50_dls(path, bs=32, wave_norm=True, cache=cache, batch_tfms=[FreqSpecNorm()], num_workers=0,
                            progress=False)
            specs[cache] = dls.test_dl([new]).one_batch()[0][0].as_subclass(torch.Tensor)
            learn = Learner(dls, tiny_model(dls.c), loss_func=CrossEntropyLossFlat(), path=tmp)
            with learn.no_bar(), learn.no_logging(): learn.fit(1)
            learn.export(f'{cache}.pkl')
            t = time.perf_counter()
            inf = load_learner(tmp/f'{cache}.pkl')
            tl = time.perf_counter() - t
            ts = []
            with inf.no_bar():
                inf.predict(new)
                for _ in range(reps):
                    t = time.perf_counter(); inf.predict(new); ts.append(time.perf_counter() - t)
            res[cache] = dict(predict=min(ts), load=tl, size=(tmp/f'{cache}.pkl').stat().st_size, n=len(dls.train_ds))
        f, c = res[False], res[True]
        print(f"\n## predict on a new {len(x)*3/sr:.0f} s clip after load_learner ({f['n']} training clips, fastest of {reps})")
        print(f"on the fly {f['predict']*1e3:.1f} ms, from the cache {c['predict']*1e3:.1f} ms: ratio cache/fly "
              f"{c['predict']/f['predict']:.2f}")
        print(f"load_learner {f['load']*1e3:.0f} ms / {c['load']*1e3:.0f} ms; exported pickle {f['size']/1e3:.0f} kB / "
              f"{c['size']/1e3:.0f} kB (the cache's learner carries its index, not its spectrograms)")
        print(f"max |difference| of the new clip's spectrogram, cache path against on the fly: "
              f"{float((specs[True] - specs[False]).abs().max()):.1e} (normalized units)")
    finally: shutil.rmtree(tmp)
