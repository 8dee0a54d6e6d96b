#!/usr/bin/env python
"""Classify WAV files with a model made by `fastnorm deploy LEARNER.pkl MODEL.onnx` (or `fastnorm.deploy.to_onnx`).

It needs onnxruntime, numpy and soundfile only: no torch, fastai or fastnorm. Everything the learner did to a clip
(crop/pad to the training length, waveform and spectrogram normalization, the network, softmax) is inside the model;
this script only reads the files, mixes them to mono and checks their sample rate against the model's.

    python examples/serve_onnx.py MODEL.onnx a.wav b.wav      # one line per file: file, label, probability
    python examples/serve_onnx.py MODEL.onnx *.wav --top 3    # the three most likely labels of each
"""
import argparse, json, sys
import numpy as np, soundfile as sf, onnxruntime as ort

def load_model(path):
    "(onnxruntime session, metadata dict) of an exported model; `vocab` and the sample rate come from its metadata"
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    missing = [k for k in ('vocab', 'sample_rate') if k not in meta]
    if missing: raise SystemExit(f"{path}: no {missing} in the model's metadata: was it made by `fastnorm deploy`?")
    meta['vocab'], meta['sample_rate'] = json.loads(meta['vocab']), int(meta['sample_rate'])
    return sess, meta

def check_rates(files, sr:int):
    "Refuse, before classifying anything, the files that are not at the model's sample rate (or not readable)"
    bad = []
    for f in files:
        try: info = sf.info(f)
        except Exception as e: bad.append(f"{f}: cannot be read ({e})")
        else:
            if info.samplerate != sr: bad.append(f"{f}: {info.samplerate} Hz, but the model expects {sr} Hz")
            elif info.frames == 0: bad.append(f"{f}: holds no samples")
    if bad:
        raise SystemExit("serve_onnx: refused:\n  " + "\n  ".join(bad) +
                         f"\nResample to {sr} Hz first (e.g. `sox in.wav -r {sr} out.wav`).")

def read_mono(path)->np.ndarray:
    "float32 samples of a file, multichannel mixed to mono by their mean (as fastnorm loads audio)"
    x, _ = sf.read(path, dtype='float32', always_2d=True)
    return x.mean(1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]

def classify(sess, wave:np.ndarray)->np.ndarray:
    "Class probabilities of one clip, any length (the model crops or pads it to the training length)"
    return sess.run(['probabilities'], {'waveform': wave[None]})[0][0]

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('model', help='the .onnx file made by `fastnorm deploy`')
    p.add_argument('files', nargs='+', help='WAV (or FLAC, OGG) files at the model\'s sample rate')
    p.add_argument('--top', type=int, default=1, help='how many labels to print per file (default 1)')
    a = p.parse_args(argv)
    sess, meta = load_model(a.model)
    check_rates(a.files, meta['sample_rate'])
    vocab = meta['vocab']
    for f in a.files:
        probs = classify(sess, read_mono(f))
        best = np.argsort(-probs, kind='stable')[:max(1, a.top)]
        print('\t'.join([f] + [f"{vocab[i]}\t{probs[i]:.4f}" for i in best]))

if __name__ == '__main__':
    main()
