"""`fastnorm export` against the clip-by-clip AVMNIST recipe, on the same FSDD clips, measured side by side in one
run.

The baseline is the recipe as it is usually written: per item, `librosa.load` the digit (its own rate) and the noise
clip (resampled to the digit's rate), crop or loop the noise, mix at the scheme's RMS SNR with numpy, draw the time
masks, and render a 1.12 x 1.12 inch, 100 dpi matplotlib figure of the `specgram` (NFFT 256, 50% overlap, `gray_r`)
whose pixels are the 112 x 112 image. The noise clips cycle through one clip per category of an ESC-50-layout folder
(the recipe's choice); here that folder is the embedded dataset (`synth_esc50()`: 16 kHz clips, so both sides resample
the noise to 8 kHz).

fastnorm's side is the whole `export_dataset(...)` call: reading the clips, loading the noise, the batches, writing
data.npy, labels.npy and the manifests. It runs with one torch thread, and with all of them (`--threads`, default:
torch's default, the machine's cores; on the CPU the export then computes two batches at once); the recipe is one
Python loop (numpy and matplotlib use one core). The sides alternate, `--reps` times; the table gives the median
items/s of each and their ratio.

Run: `python bench/export.py [--n 500] [--reps 3] [--scheme burst_noise] [--format image] [--threads N]`"""
import argparse, os, platform, shutil, statistics, tempfile, time
from pathlib import Path
import numpy as np, torch
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
from matplotlib import mlab
import librosa
import fastnorm
from fastnorm.synth import synth_esc50
from fastnorm.noise import noise_files
from fastnorm.avmnist.schemes import SCHEMES
from fastnorm.avmnist import export_dataset

FSDD = Path(__file__).resolve().parents[1].parent/'shared'/'data'/'fsdd'/'recordings'

def recipe_item(path, noise_path, params, rng):
    "One item of the clip-by-clip recipe: librosa, numpy, a matplotlib figure; `[112,112]` uint8"
    y, sr = librosa.load(path, sr=None)
    if 'snr_db' in params:
        n, _ = librosa.load(noise_path, sr=sr)
        if len(n) >= len(y):
            o = rng.integers(0, len(n) - len(y) + 1)
            n = n[o:o + len(y)]
        else: n = np.resize(n, len(y))  # loop
        rms = lambda a: np.sqrt(np.mean(a.astype(np.float64) ** 2))
        y = y + n * (rms(y) / rms(n) * 10 ** (-params['snr_db'] / 20))
    if 'tanh_drive' in params: y = np.tanh(params['tanh_drive'] * y / np.abs(y).max())
    pxx, _, _ = mlab.specgram(y, NFFT=256, Fs=sr, noverlap=128)
    z = 10 * np.log10(np.maximum(pxx, 1e-30))
    z = np.maximum(z, z.max() - 120)
    if 'time_masks' in params:
        k, frac = params['time_masks']
        w = max(1, round(frac * z.shape[1]))
        for _ in range(k):
            s = rng.integers(0, z.shape[1] - w + 1)
            z[:, s:s + w] = z.min()
    fig = plt.figure(figsize=(1.12, 1.12), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    ax.imshow(z, origin='lower', aspect='auto', cmap='gray_r')
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., 0].copy()
    plt.close(fig)
    return img

def run_recipe(files, noise, params, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([recipe_item(f, noise[i % len(noise)], params, rng) for i, f in enumerate(files)])

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=500)
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--scheme', default='burst_noise')
    ap.add_argument('--format', default='image')
    ap.add_argument('--threads', type=int, default=torch.get_num_threads())
    ap.add_argument('--rows', type=int, default=60000,
                    help="rows of the longer export (the clips reused, AVMNIST's 60,000)")
    a = ap.parse_args()
    if not FSDD.is_dir(): raise SystemExit(f"FSDD not found at {FSDD}")
    every = sorted(FSDD.glob('*.wav'))
    files = every[::max(1, len(every) // a.n)][:a.n]  # spread over digits, speakers and takes
    work = Path(tempfile.mkdtemp(prefix='bench-export-'))
    data = work/'fsdd'
    data.mkdir()
    for f in files: (data/f.name).symlink_to(f)
    noise_dir = synth_esc50()
    noise = noise_files(noise_dir, per_class=1)
    params = SCHEMES[a.scheme]
    run_recipe(files[:5], noise, params)  # warm-up: imports, font cache
    kw = dict(data=data, noise=noise_dir, noise_per_class=1, scheme=a.scheme, format=a.format, progress=False,
              device='cpu')
    export_dataset(work/'warm', **kw)
    digits = np.array([int(f.name[0]) for f in files])
    labels = np.resize(digits, a.rows)  # each row gets the next recording of its digit: every clip used rows/n times
    threads = sorted({1, a.threads})
    t_recipe, t_ours, t_long = [], {n: [] for n in threads}, {n: [] for n in threads}
    for r in range(a.reps):
        t = time.perf_counter()
        ref = run_recipe(files, noise, params)
        t_recipe.append(time.perf_counter() - t)
        for n in threads:
            torch.set_num_threads(n)
            t = time.perf_counter()
            export_dataset(work/f'out{r}-{n}', **kw)
            t_ours[n].append(time.perf_counter() - t)
            t = time.perf_counter()
            export_dataset(work/f'long{r}-{n}', labels=labels, **kw)
            t_long[n].append(time.perf_counter() - t)
    ours = np.load(work/f'out0-{threads[0]}'/'data.npy', mmap_mode='r')
    rate_r = len(files) / statistics.median(t_recipe)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"librosa {librosa.__version__}, matplotlib {matplotlib.__version__}, fastnorm {fastnorm.__version__}")
    print(f"{len(files)} FSDD clips, scheme {a.scheme}, format {a.format}, noise: {len(noise)} clips (one per "
          f"category), {a.reps} reps")
    print(f"recipe runs (s): {[round(v, 2) for v in t_recipe]}; export runs (s): "
          f"{ {n: [round(v, 3) for v in t_ours[n]] for n in threads} }; {a.rows}-row export runs (s): "
          f"{ {n: [round(v, 3) for v in t_long[n]] for n in threads} }")
    print(f"| side | items/s (median of {a.reps}) | ratio | s per 60,000 (scaled) |")
    print("|---|---:|---:|---:|")
    sides = [('clip-by-clip recipe (librosa + numpy + matplotlib figure), the 500 clips', rate_r)]
    for n in threads:
        sides += [(f'`export_dataset`, --format {a.format}, the same 500 clips (whole call), {n} torch thread(s)',
                   len(files) / statistics.median(t_ours[n])),
                  (f'`export_dataset`, --format {a.format}, {a.rows} rows of those clips, {n} torch thread(s)',
                   a.rows / statistics.median(t_long[n]))]
    for name, rate in sides:
        print(f"| {name} | {rate:.1f} | {rate / rate_r:.1f}x | {60000 / rate:.0f} |")
    if a.format == 'image' and a.scheme == 'clean':
        a_, b_ = ref.astype(float), np.asarray(ours).astype(float)
        c = np.corrcoef(a_.ravel(), b_.ravel())[0, 1]
        print(f"clean images: correlation with the recipe's {c:.4f}, "
              f"mean |difference| {np.abs(a_ - b_).mean():.2f} grey levels")
    shutil.rmtree(work)

if __name__ == '__main__': main()
