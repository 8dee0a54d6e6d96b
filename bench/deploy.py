"""What the ONNX export buys at inference, measured side by side in one run on the same clips: fastai's `learn.predict`
per clip and `get_preds` on a batch, against onnxruntime per clip and on a batch, on the file `to_onnx` wrote.

A learner of the comparison's quick preset (`xresnet18_tiny`, 16 kHz, 64 mels, `wave_norm=True`, `FreqSpecNorm()`)
trained one epoch on the embedded dataset, exported with `learn.export()` and loaded again with `load_learner` (as a
server would), then `fastnorm deploy`'s `to_onnx` of that pickle. The clips are new WAV files of 1.5x the training
length (so every path centre-crops them). Every path starts from the file on disk: `predict` and `get_preds` read it
through the learner's pipeline, onnxruntime's side reads it with soundfile. The four alternate repetition by
repetition (the machine may be shared) and medians are reported.

    python bench/deploy.py              # 32 clips, 5 repetitions (about a minute on a 2-core CPU)
    python bench/deploy.py --quick      # a smoke run
"""
from __future__ import annotations
import platform, shutil, statistics, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np, soundfile as sf, torch
from fastcore.script import call_parse
from fastai.learner import load_learner
import fastai
import fastai.callback.progress  # noqa: F401 (Learner.no_bar)
import onnxruntime as ort
from fastnorm import __version__
from fastnorm.synth import synth_esc50
from fastnorm.data import esc50_dls, read_esc50_csv
from fastnorm.norm import FreqSpecNorm
from fastnorm.study.models import make_learner
from fastnorm.deploy import to_onnx, onnx_metadata

def new_clips(path, n:int, dest:Path)->list:
    "`n` new files of 1.5x the training length, made from the validation fold's clips"
    df = read_esc50_csv(path)
    src = list(df[df.fold == 1].path)
    rng = np.random.default_rng(0)
    dest.mkdir()
    out = []
    for i in range(n):
        x, sr = sf.read(src[i % len(src)], dtype='float32')
        y = np.concatenate([x, x[: len(x) // 2][::-1]])
        y = y + rng.standard_normal(len(y)).astype(np.float32) * .01
        out.append(dest/f'{i}.wav')
        sf.write(out[-1], y, sr, subtype='PCM_16')
    return out

@call_parse
def main(quick:bool=False, # a small smoke run, numbers not for BENCHMARKS.md
         clips:int=32, # clips timed (one batch of this size for the batch paths)
         reps:int=5, # timing repetitions (medians reported)
        ):
    "Train one epoch, export, load, deploy to ONNX, and time the four ways to classify the same clips"
    print(f"fastnorm {__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), fastai "
          f"{fastai.__version__}, onnxruntime {ort.__version__}, {platform.machine()}, python {sys.version.split()[0]}")
    tmp = Path(tempfile.mkdtemp())
    try:
        if quick: clips, reps = 4, 2
        path = synth_esc50(**(dict(clips_per_class=5, seconds=1.0) if quick else {}))
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            dls = esc50_dls(path, bs=32, wave_norm=True, batch_tfms=[FreqSpecNorm(progress=False)], num_workers=0,
                            progress=False)
            learn = make_learner(dls, 'xresnet18_tiny')
            learn.path = tmp
            with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
            learn.export('learn.pkl')
            learn = load_learner(tmp/'learn.pkl')
        t = time.perf_counter()
        model = to_onnx(tmp/'learn.pkl', tmp/'model.onnx')
        t_export = time.perf_counter() - t
        sess = ort.InferenceSession(str(model), providers=['CPUExecutionProvider'])
        files = new_clips(path, clips, tmp/'new')
        read = lambda f: sf.read(f, dtype='float32')[0]
        def predict():
            with learn.no_bar(): return np.stack([learn.predict(f)[2].numpy() for f in files])
        def get_preds():
            with learn.no_bar(): return learn.get_preds(dl=learn.dls.test_dl(files, bs=len(files)))[0].numpy()
        def ort_clip(): return np.concatenate([sess.run(None, {'waveform': read(f)[None]})[0] for f in files])
        def ort_batch(): return sess.run(None, {'waveform': np.stack([read(f) for f in files])})[0]
        ways = {'learn.predict, per clip': predict, 'learn.get_preds, one batch': get_preds,
                'onnxruntime, per clip': ort_clip, 'onnxruntime, one batch': ort_batch}
        probs = {k: f() for k, f in ways.items()}  # warm-up, and the probabilities compared below
        times = {k: [] for k in ways}
        for _ in range(reps):
            for k, f in ways.items():
                t = time.perf_counter(); f(); times[k].append(time.perf_counter() - t)
        xb = learn.dls.test_dl(files[:1]).one_batch()[0]  # what predict's pipeline hands the network, for one clip
        net = learn.model.eval()
        with torch.no_grad():
            net(xb)
            t_net = [time.perf_counter()]
            for _ in range(reps * 10): net(xb)
            t_net = (time.perf_counter() - t_net[0]) / (reps * 10)
        med = {k: statistics.median(v) / clips for k, v in times.items()}
        base = med['learn.predict, per clip']
        print(f"\n## {clips} new {sf.info(files[0]).duration:.1f} s clips at {sf.info(files[0]).samplerate} Hz "
              f"(cropped to {onnx_metadata(model)['duration']:g} s), median of {reps}; "
              f"onnxruntime {sess.get_session_options().intra_op_num_threads or 'default'} intra-op threads\n")
        print("| | ms per clip | clips/s | speed-up over predict |\n|---|---:|---:|---:|")
        for k, v in med.items(): print(f"| {k} | {v * 1e3:.2f} | {1 / v:.0f} | {base / v:.1f}x |")
        print(f"\nthe network alone in torch, one clip's spectrogram: {t_net * 1e3:.2f} ms, so `predict`'s pipeline "
              f"around it costs {(base - t_net) * 1e3:.2f} ms per clip")
        diff = max(float(np.abs(p - probs['learn.predict, per clip']).max()) for p in probs.values())
        pkl = (tmp/'learn.pkl').stat().st_size
        print(f"\n.onnx file {model.stat().st_size / 1e3:.0f} kB (exported pickle {pkl / 1e3:.0f} kB); to_onnx "
              f"(export + check) {t_export:.1f} s; max |probability difference| between the four ways {diff:.1e}")
    finally: shutil.rmtree(tmp)
