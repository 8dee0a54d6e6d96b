"""Seconds per training epoch on real audio at ESC-50's own rate: `fastnorm compare`'s cached training against the
model-only bound and a plain PyTorch pipeline, measured side by side in one run.

The clips are ESC-10's (the 400 real clips in `../shared/data/esc10`, a 16 kHz copy), upsampled to 44.1 kHz as the real
ESC-50 ships them (16-bit PCM), into a temporary folder in ESC-50's layout. All three train the quick preset's network
(`xresnet18_tiny`, channels-last) with Adam on fold 2-5's 320 clips, bs 32, to a 10-class head:

- fastnorm: `fastnorm compare`'s job, `esc50_dls(..., spec='quick', wave_norm=True, cache=True)` with the `channel`
  recipe (per-mel-bin statistics) and `learn.fit_one_cycle`, as `fastnorm/study/jobs.py` trains. The clips are decoded,
  resampled 44.1k -> 16k and made into log-mels once, into the feature cache (timed apart: `cache build`);
- model only: the same network on the same normalized spectrograms held as one in-memory tensor, a bare loop
  (forward, cross-entropy, backward, Adam step): what an epoch costs with no data pipeline at all;
- plain PyTorch: a `Dataset` that, in `__getitem__`, loads the clip with soundfile, resamples it to 16 kHz with
  `scipy.signal.resample_poly` (160/441), normalizes it and computes its log-mel with librosa (the quick preset's
  n_fft 512, hop 256, 64 slaney mels, dB with top_db 80), as ESC-50 repositories do; a standard `DataLoader`
  (shuffled, `--workers` processes), the same network, Adam and loop.

fastnorm's epoch also validates (fastai's `fit` runs the 80 validation clips after each epoch); the other two do not.
So fastnorm is timed twice from the same epochs: its training phase alone (a callback from `before_train` to
`after_train`: like for like with the other two, and what the targets are read on) and the whole epoch with validation. Each runs a warm-up epoch, then `--epochs` timed epochs; the three alternate epoch by epoch (the machine may be shared),
and medians are compared. torch uses `--threads` threads in every path.

    python bench/epoch.py                      # 3 timed epochs each, DataLoader workers 0 and 2 for the plain pipeline
    python bench/epoch.py --epochs 5 --workers 2
"""
from __future__ import annotations
import os, platform, shutil, statistics, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, soundfile as sf, torch
from torch import nn
from fastcore.script import call_parse
from fastai.callback.core import Callback
from fastnorm import __version__
from fastnorm.data import esc50_dls
from fastnorm.spec import spec_config
from fastnorm.study.models import make_learner
from fastnorm.study.recipes import apply_recipe

ESC10 = Path(__file__).resolve().parents[2]/'shared'/'data'/'esc10'
SR = 44100

def upsampled(dest:Path, src:Path=ESC10)->Path:
    "ESC-10's clips at 44.1 kHz in ESC-50's layout under `dest`"
    from scipy.signal import resample_poly
    (dest/'audio').mkdir(parents=True)
    (dest/'meta').mkdir()
    df = pd.read_csv(src/'meta'/'esc50.csv')
    for f in df['filename']:
        x, r = sf.read(src/'audio'/f, dtype='float32')
        sf.write(dest/'audio'/f, np.clip(resample_poly(x, SR // 100, r // 100), -1, 1), SR, subtype='PCM_16')
    shutil.copy(src/'meta'/'esc50.csv', dest/'meta'/'esc50.csv')
    return dest

class PlainESC(torch.utils.data.Dataset):
    "What ESC-50 repositories do: load, resample and make the log-mel of each clip in `__getitem__`"
    def __init__(self, files, labels, cfg):
        self.files, self.labels, self.cfg = list(files), list(labels), cfg
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        import librosa
        from scipy.signal import resample_poly
        c = self.cfg
        x, r = sf.read(self.files[i], dtype='float32')
        x = resample_poly(x, c.sr // 100, r // 100).astype(np.float32)
        x = (x - x.mean()) / (x.std() + 1e-8)
        m = librosa.feature.melspectrogram(y=x, sr=c.sr, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels,
                                           power=2.0)
        return torch.from_numpy(librosa.power_to_db(m, top_db=80.0)[None].astype(np.float32)), self.labels[i]

def train_epoch(model, opt, batches)->float:
    "One epoch of a bare loop over `batches` (x, y); returns its seconds"
    t = time.perf_counter()
    model.train()
    for xb, yb in batches:
        loss = nn.functional.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return time.perf_counter() - t

def in_memory(X, Y, bs:int, seed:int):
    "Shuffled batches of the tensors `X`, `Y`, as a generator"
    g = torch.Generator().manual_seed(seed)
    p = torch.randperm(len(X), generator=g)
    return ((X[p[i:i+bs]], Y[p[i:i+bs]]) for i in range(0, len(X) - bs + 1, bs))  # drop_last, as fastai trains

class TrainPhase(Callback):
    "The seconds of the training phase of the last epoch, without its validation"
    def before_train(self): self.start = time.perf_counter()
    def after_train(self): self.seconds = time.perf_counter() - self.start

def fastnorm_epoch(learn)->tuple:
    "(seconds of one `fit_one_cycle` epoch with its validation, seconds of its training phase alone)"
    t, phase = time.perf_counter(), TrainPhase()
    with learn.no_bar(), learn.no_logging(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn.fit_one_cycle(1, 3e-3, cbs=phase)
    return time.perf_counter() - t, phase.seconds

@call_parse
def main(epochs:int=3, # timed epochs of each pipeline (after one warm-up epoch each)
         workers:str='0,2', # DataLoader worker processes of the plain pipeline to measure, comma list
         bs:int=32, # batch size
         threads:int=None, # torch threads [default: the CPU count]
        ):
    "Seconds per epoch: fastnorm's cached training, the model-only bound, a plain PyTorch pipeline"
    if not ESC10.is_dir():
        raise SystemExit(f"bench/epoch.py: the shared ESC-10 copy is not at {ESC10}")
    torch.set_num_threads(threads or os.cpu_count())
    tmp = Path(tempfile.mkdtemp(prefix='fastnorm-epoch-'))
    os.environ['FASTNORM_HOME'] = str(tmp/'home')  # a cold cache, built in this run
    try:
        t = time.perf_counter()
        path = upsampled(tmp/'esc10-44k')
        t_up = time.perf_counter() - t
        t = time.perf_counter()
        dls = esc50_dls(path, fold=1, spec='quick', wave_norm=True, cache=True, bs=bs, progress=False)
        t_cache = time.perf_counter() - t
        torch.manual_seed(0)
        apply_recipe(dls, 'channel', seed=0)
        learn = make_learner(dls, 'xresnet18_tiny')
        # the model-only bound: the same normalized batches, once, in memory
        xs, ys = zip(*[(x.as_subclass(torch.Tensor).clone(), y.as_subclass(torch.Tensor).clone())
                       for x, y in dls.train])
        X, Y = torch.cat(xs), torch.cat(ys)
        torch.manual_seed(0)
        bound = make_learner(dls, 'xresnet18_tiny').model
        bound_opt = torch.optim.Adam(bound.parameters(), lr=1e-3)
        cfg = spec_config('quick')
        df = dls.train.items
        ws = [int(w) for w in workers.split(',')]
        plain = {}
        for w in ws:
            torch.manual_seed(0)
            m = make_learner(dls, 'xresnet18_tiny').model
            ds = PlainESC(df['path'].tolist(), [dls.vocab.o2i[c] for c in df['category']], cfg)
            dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=w,
                                             persistent_workers=w > 0)
            plain[w] = (m, torch.optim.Adam(m.parameters(), lr=1e-3), dl)
        times = {'fastnorm': [], 'fastnorm, with validation': [], 'model only': [],
                 **{f'plain, {w} workers': [] for w in ws}}
        for e in range(epochs + 1):  # epoch 0 warms up
            whole, train = fastnorm_epoch(learn)
            got = {'fastnorm': train, 'fastnorm, with validation': whole,
                   'model only': train_epoch(bound, bound_opt, in_memory(X, Y, bs, e))}
            for w, (m, opt, dl) in plain.items():
                got[f'plain, {w} workers'] = train_epoch(m, opt, ((x, torch.as_tensor(y)) for x, y in dl))
            if e:
                for k, v in got.items(): times[k].append(v)
        n = len(X)
        med = {k: statistics.median(v) for k, v in times.items()}
        best_plain = min(v for k, v in med.items() if k.startswith('plain'))
        print(f"fastnorm {__version__}, torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
              f"{torch.get_num_threads()} threads; ESC-10 fold 1 validation: {n} training clips of 5 s at 44.1 kHz, "
              f"bs {bs}, {epochs} timed epochs after a warm-up (medians)")
        print(f"upsampling 16k -> 44.1k (setup, not timed below): {t_up:.1f} s; "
              f"cache build (load, resample to 16k, log-mel, 400 clips): {t_cache:.1f} s, once")
        print('| pipeline | s / epoch | clips / s | vs model only |')
        print('|---|---:|---:|---:|')
        for k, v in med.items():
            print(f"| {k} | {v:.2f} | {n / v:.0f} | {v / med['model only']:.2f}x |")
        print(f"fastnorm over the model-only bound: {100 * (med['fastnorm'] / med['model only'] - 1):+.0f}% "
              f"(target <= +15%); with its validation pass: "
              f"{100 * (med['fastnorm, with validation'] / med['model only'] - 1):+.0f}%")
        print(f"fastnorm's throughput over the fastest plain pipeline: {best_plain / med['fastnorm']:.2f}x "
              f"(target >= 2x); with its validation pass: {best_plain / med['fastnorm, with validation']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
