"""Feature cache speed: one training epoch read from the cache against one that decodes and transforms every clip, measured in one run.

The cached path is `esc50_dls(path, cache=True)`: a `CachedSpecDL` that reads each batch with one memmap slice. The on-the-fly
path is `esc50_dls(path, cache=False)`: soundfile decoding, resampling (when needed), `AudioCropPad`, `AudioNormalize` and `MelSpec`
for every clip of every batch. Both run on the same embedded dataset, interleaved, `reps` times each after a warm-up epoch (the
machine may be shared), and the medians are compared; the one-off cost of building the cache is timed too.

    python bench/cache.py            # ESC-50's shape: 10 classes x 40 clips of 5 s at 44.1 kHz, 'esc50' preset (128 mels)
    python bench/cache.py --quick    # 2 s clips at 16 kHz, 'quick' preset (64 mels)
"""
from __future__ import annotations
import os, platform, shutil, statistics, sys, tempfile, time
import torch
from fastcore.script import call_parse
from fastnorm import __version__
from fastnorm.synth import synth_esc50
from fastnorm.data import esc50_dls, read_esc50_csv
from fastnorm.spec import spec_config
from fastnorm.cache import SpecCache
from fastnorm.utils import fastnorm_home

SETTINGS = {  # name -> (synth_esc50 kwargs, spectrogram preset)
    'esc50': (dict(clips_per_class=40, seconds=5.0, sr=44100), 'esc50'),
    'quick': (dict(clips_per_class=40, seconds=2.0, sr=16000), 'quick'),
}

def epoch(dl)->float:
    "Seconds to iterate once over `dl`"
    t = time.perf_counter()
    for _ in dl: pass
    return time.perf_counter() - t

def bench(setting:str, reps:int, bs:int, workers:int|None):
    "Time the cache build, then `reps` interleaved training epochs of each path; returns a dict of figures"
    kw, preset = SETTINGS[setting]
    t = time.perf_counter()
    path = synth_esc50(**kw)
    t_synth = time.perf_counter() - t
    df, cfg = read_esc50_csv(path), spec_config(preset)
    common = dict(bs=bs, spec=preset, wave_norm=True)
    # the one-off build, into a fresh folder so it is always a real build (the files are in the page cache after generation)
    tmp = tempfile.mkdtemp(dir=fastnorm_home(), prefix='.bench-cache-')
    try:
        t = time.perf_counter()
        SpecCache.build(df['path'], cfg, kw['seconds'], wave_norm=True, dest=f'{tmp}/c', progress=False)
        t_build = time.perf_counter() - t
    finally: shutil.rmtree(tmp)
    esc50_dls(path, cache=True, **common)  # make (or reuse) the cache esc50_dls keys under $FASTNORM_HOME/cache
    t = time.perf_counter()
    dls_c = esc50_dls(path, cache=True, **common)
    t_reuse = time.perf_counter() - t
    dls = {'cache': dls_c.train,
           'fly0': esc50_dls(path, cache=False, num_workers=0, **common).train,
           'flyw': esc50_dls(path, cache=False, num_workers=workers, **common).train}
    x_c, x_f = dls['cache'].one_batch()[0], dls['fly0'].one_batch()[0]
    assert x_c.shape == x_f.shape and type(x_c) is type(x_f), (x_c.shape, x_f.shape)
    times = {k: [] for k in dls}
    for dl in dls.values(): epoch(dl)  # warm: memmap pages, worker start-up code paths, front-end kernels
    for _ in range(reps):
        for k, dl in dls.items(): times[k].append(epoch(dl))
    dl = dls['cache']
    return dict(setting=setting, preset=preset, kw=kw, n_clips=len(df), n_train=len(dl.dataset), n_batches=len(dl), bs=bs,
                shape=tuple(x_c.shape[1:]), t_synth=t_synth, t_build=t_build, t_reuse=t_reuse,
                workers=dls['flyw'].fake_l.num_workers, times=times, reps=reps)

def report(r)->str:
    "A markdown section for BENCHMARKS.md"
    med = {k: statistics.median(v) for k, v in r['times'].items()}
    lo = {k: min(v) for k, v in r['times'].items()}
    kw, n = r['kw'], r['n_train']
    rows = [('feature cache (`cache=True`, `CachedSpecDL`)', 0, 'cache'),
            ('decode + transform every clip (`cache=False`)', 0, 'fly0'),
            ('decode + transform every clip (`cache=False`)', r['workers'], 'flyw')]
    out = [f"### `{r['setting']}`: {r['n_clips']} clips of {kw['seconds']:g} s at {kw['sr']} Hz, '{r['preset']}' preset "
           f"-> [{', '.join(map(str, r['shape']))}] per clip",
           '', f"One training epoch: {n} clips, {r['n_batches']} batches of {r['bs']} (fold 1 held out), `wave_norm=True`; "
           f"median (fastest) of {r['reps']} interleaved repetitions after a warm-up epoch.", '',
           '| path | workers | epoch, median (s) | fastest (s) | clips/s | cache speed-up |', '|---|---:|---:|---:|---:|---:|']
    for name, w, k in rows:
        out.append(f"| {name} | {w} | {med[k]:.3f} | {lo[k]:.3f} | {n/med[k]:,.0f} | {med[k]/med['cache']:.0f}x |")
    out += ['', f"Building the cache once (decode + transform all {r['n_clips']} clips, write the memmap): {r['t_build']:.2f} s, "
            f"{r['t_build']/med['fly0']:.1f} on-the-fly epochs; reopening it and building the DataLoaders: {r['t_reuse']:.2f} s. "
            f"Generating the dataset (first use only): {r['t_synth']:.1f} s.",
            '', f"**Cache vs on the fly, one process each: {med['fly0']/med['cache']:.0f}x faster** "
            f"({med['flyw']/med['cache']:.0f}x against {r['workers']} workers; target: at least 10x)."]
    return '\n'.join(out)

@call_parse
def main(quick:bool=False, # the 'quick' preset on 2 s 16 kHz clips instead of ESC-50's shape
         both:bool=False, # run both settings, ESC-50's shape first
         reps:int=5, # timed epochs per path
         bs:int=32, # batch size
         workers:int=None, # workers of the second on-the-fly run; default: fastai's (min(16, CPUs))
        ):
    "Time an epoch from the feature cache against an epoch that decodes and transforms every clip, and print markdown"
    print(f"fastnorm {__version__}, torch {torch.__version__}, python {sys.version.split()[0]}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"FASTNORM_HOME={fastnorm_home()}\n")
    for s in (['esc50', 'quick'] if both else ['quick'] if quick else ['esc50']):
        print(report(bench(s, reps, bs, workers)), '\n', flush=True)
