"""Seconds per training epoch of `fastnorm compare`'s presets on this machine, measured in one run.

The quick preset is timed on its own data (the embedded dataset, 320 training clips). The paper preset (xresnet18,
16 kHz, 201-bin spectrogram, bs 64) is timed on an embedded dataset with ESC-50's clip length (5 s) and scaled to
ESC-50's 1,600 training clips per fold, since the real ESC-50 cannot be downloaded here.
Usage: python bench/presets.py [--epochs 2] [--threads N]
"""
import argparse, os, platform, time, warnings
import torch
from fastai.torch_core import set_seed
from fastnorm.synth import synth_esc50
from fastnorm.data import esc50_dls
from fastnorm.study import PRESETS, make_learner
from fastnorm.norm import add_spec_norm

def epoch_seconds(path, preset, epochs):
    p = PRESETS[preset]
    set_seed(0)
    dls = add_spec_norm(esc50_dls(path, fold=1, bs=p['bs'], spec=p['spec'], wave_norm=True, cache=True), norm='freq')
    learn = make_learner(dls, p['arch'])
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(1, p['lr'])  # warm-up epoch, not timed
        t = time.perf_counter()
        learn.fit_one_cycle(epochs, p['lr'])
        secs = (time.perf_counter() - t) / epochs
    return secs, len(dls.train_ds), tuple(dls.one_batch()[0].shape[1:])

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--epochs', type=int, default=2)
    ap.add_argument('--threads', type=int, default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    else:
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), no GPU")
    q, nq, sq = epoch_seconds(synth_esc50(), 'quick', a.epochs)
    pp, npp, sp = epoch_seconds(synth_esc50(seconds=5.0, sr=16000), 'paper', a.epochs)
    print("| preset | arch | input | train clips | s/epoch measured | s/epoch for ESC-50 (1,600 clips) |")
    print("|---|---|---|---|---|---|")
    print(f"| quick | {PRESETS['quick']['arch']} | {list(sq)} | {nq} | {q:.2f} | {q/nq*1600:.1f} |")
    print(f"| paper | {PRESETS['paper']['arch']} | {list(sp)} | {npp} | {pp:.2f} | {pp/npp*1600:.1f} |")
    print(f"paper / quick per clip: {(pp/npp)/(q/nq):.1f}x")
