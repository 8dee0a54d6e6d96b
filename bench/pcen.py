"""PCEN speed: fastnorm's batch `pcen` on a [64,1,128,431] float32 batch against `librosa.pcen` item by item, one run.

The input is a power mel spectrogram batch of ESC-50's shape (5 s at 44.1 kHz, hop 512, 128 mels): librosa's own mel
spectrograms of the shared recordings (`../shared/data/examples`, cut and tiled to 431 frames) scaled by 2**31 as librosa's
docs do for float audio, or random log-normal power when the recordings are absent. Each repetition times both sides back to
back (the machine may be shared: whatever load there is hits both alike); the table gives medians and the largest relative
difference of the outputs. Run: `python bench/pcen.py [--reps 7] [--threads N]`.
"""
import argparse, platform, statistics, time
from pathlib import Path
import numpy as np, torch, librosa
from fastnorm.pcen import pcen
import fastnorm

SHARED = Path(__file__).resolve().parents[1].parent/'shared'/'data'/'examples'

def batch(B=64, F=128, T=431, sr=44100, hop=512):
    files = sorted(SHARED.glob('*.ogg'))
    if not files:
        return (np.random.default_rng(0).lognormal(0, 3, (B, 1, F, T)) * 1e3).astype(np.float32), 'random log-normal power'
    mels = []
    for f in files:
        y, _ = librosa.load(f, sr=sr)
        mels.append(librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=hop, n_mels=F))
    long = np.concatenate(mels, 1)
    out = np.stack([np.take(long, (np.arange(T) + 97 * i) % long.shape[1], axis=1) for i in range(B)])[:, None]
    return (out * 2.**31).astype(np.float32), f"librosa mel spectrograms of {', '.join(f.name for f in files)} x 2**31"

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--reps', type=int, default=7)
    ap.add_argument('--threads', type=int, default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    S, what = batch()
    x = torch.from_numpy(S)
    ref = np.stack([librosa.pcen(S[i, 0], sr=44100, hop_length=512)[None] for i in range(len(S))])  # warm-up both
    got = pcen(x, 44100, 512).numpy()
    rel = float(np.max(np.abs(got - ref) / (np.abs(ref) + 1e-6)))
    tl, tb = [], []
    for _ in range(a.reps):
        t = time.perf_counter()
        for i in range(len(S)): librosa.pcen(S[i, 0], sr=44100, hop_length=512)
        tl.append(time.perf_counter() - t)
        t = time.perf_counter()
        pcen(x, 44100, 512)
        tb.append(time.perf_counter() - t)
    ml, mb = statistics.median(tl), statistics.median(tb)
    print(f"input: [64,1,128,431] float32, {what}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, librosa {librosa.__version__}, "
          f"fastnorm {fastnorm.__version__}, python {platform.python_version()}")
    print("| librosa.pcen, item by item (ms) | fastnorm pcen, one batch (ms) | speed-up | max relative difference | target |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {ml*1e3:.1f} | {mb*1e3:.1f} | **{ml/mb:.1f}x** | {rel:.1e} | >= 20x |")

if __name__ == '__main__': main()
