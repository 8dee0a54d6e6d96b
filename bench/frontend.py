"""fastnorm's pure-torch front end against torchaudio on the same batch, all ratios measured in one run.

- `MelSpec` (esc50 preset: 44.1 kHz, n_fft 2048, hop 512, 128 slaney mels, dB) against torchaudio's `MelSpectrogram` with
  the same settings followed by `AmplitudeToDB`, on a `[64, 1, 5 s at 44.1 kHz]` batch;
- `fastnorm.dsp.resample` against `torchaudio.functional.resample` (its default Hann filter, and the Kaiser filter with
  fastnorm's settings), 44.1 kHz -> 16 kHz on the same batch.

torchaudio only loads against the torch it was built for, so run this where both load, e.g.
`pip install "torch==2.11.0" "torchvision==0.26.*" "torchaudio==2.11.0"` (torchaudio 2.11.1 needs a newer torch);
then `python bench/frontend.py [--pairs 15]`.
Each ratio comes from alternating single calls of its two sides (whatever load the machine has hits both alike); the table
gives medians of the per-pair ratios (torchaudio time / fastnorm time, so > 1 means fastnorm is faster).
"""
import argparse, platform, statistics, time
import torch
import torchaudio
import torchaudio.transforms as TA
import torchaudio.functional as TAF
import fastnorm
from fastnorm.audio import AudioTensor
from fastnorm.spec import MelSpec
from fastnorm.dsp import resample

def once(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0

def paired(a, b, pairs):
    "Median time of each side and median of the per-pair ratios a/b, alternating a and b"
    a()  # warm-up: caches, allocator
    b()
    ta, tb = [], []
    for _ in range(pairs):
        ta.append(once(a))
        tb.append(once(b))
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in zip(ta, tb))

def main(pairs:int=15, threads:int|None=None):
    if threads: torch.set_num_threads(threads)
    x = torch.randn(64, 1, 5 * 44100, generator=torch.Generator().manual_seed(0)) * 0.1
    audio = AudioTensor(x, sr=44100)
    ours = MelSpec.from_preset('esc50')
    c = ours.cfg
    theirs = torch.nn.Sequential(
        TA.MelSpectrogram(c.sr, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels, norm='slaney', mel_scale='slaney'),
        TA.AmplitudeToDB('power', top_db=None))
    diff = float((ours(audio).as_subclass(torch.Tensor) - theirs(x)).abs().max())
    rows = [('MelSpec, esc50 preset (dB)', 'MelSpectrogram + AmplitudeToDB', paired(lambda: theirs(x), lambda: ours(audio), pairs))]
    rows.append(('dsp.resample 44.1k->16k', 'functional.resample (default)',
                 paired(lambda: TAF.resample(x, 44100, 16000), lambda: resample(x, 44100, 16000), pairs)))
    kaiser = dict(lowpass_filter_width=10, rolloff=1.0, resampling_method='sinc_interp_kaiser', beta=5.0)
    rows.append(('dsp.resample 44.1k->16k', 'functional.resample (Kaiser, same filter)',
                 paired(lambda: TAF.resample(x, 44100, 16000, **kaiser), lambda: resample(x, 44100, 16000), pairs)))
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}, fastnorm {fastnorm.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; batch [64,1,220500]; "
          f"{pairs} pairs; max |dB difference| of the two mel spectrograms: {diff:.2e}")
    print("| fastnorm | torchaudio | torchaudio (ms) | fastnorm (ms) | speed ratio (torchaudio / fastnorm) | target |")
    print("|---|---|---:|---:|---:|---:|")
    for a, b, (tb, ta, r) in rows: print(f"| {a} | {b} | {tb*1e3:.1f} | {ta*1e3:.1f} | **{r:.2f}x** | >= 1.0 |")

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--pairs', type=int, default=15, help='alternating calls of each side')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s own)')
    main(**vars(p.parse_args()))
