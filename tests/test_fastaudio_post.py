"""The normalization post's code on fastnorm.fastaudio, at tiny scale: stock fastai `Normalize` now really applies.

In fastaudio, `AudioSpectrogram` was a `TensorImageBase` and `Normalize` only dispatches on `TensorImage`, so
`Normalize(mean, std, axes=...)` in `batch_tfms` passed the spectrograms through untouched."""
import os, subprocess, sys
import pandas as pd, pytest, torch
from fastai.vision.all import (DataBlock, CategoryBlock, ColReader, IndexSplitter, mask2idxs, Normalize, cnn_learner,
                                resnet18, CrossEntropyLossFlat, accuracy, RandomSplitter)
from fastnorm.fastaudio.core.all import *
from fastnorm.fastaudio.augment.all import *
from fastnorm.spec import TensorSpec

class StatsRecorder:
    "The post's running mean/std over batches, reducing `red_dims` (kept dims stay, as size-1 dims elsewhere)"
    def __init__(self, red_dims=(0, 2, 3)):
        self.red_dims, self.n = red_dims, 0
    def update(self, data):
        data = data.as_subclass(torch.Tensor).double()
        m = data.mean(self.red_dims, keepdim=True)
        v = data.var(self.red_dims, keepdim=True, unbiased=False)
        k = data.numel() // m.numel()
        if self.n == 0: self.mean, self.var = m, v
        else:
            d, tot = m - self.mean, self.n + k
            self.var = (self.n * self.var + k * v) / tot + d ** 2 * self.n * k / tot ** 2
            self.mean = self.mean + d * k / tot
        self.n += k
    @property
    def std(self): return self.var.sqrt()

def CrossValidationSplitter(col='fold', fold=1):
    "Split `items` (supposed to be a dataframe) by fold in `col`"
    def _inner(o):
        valid_idx = (o[col] == fold).values.astype('bool')
        return IndexSplitter(mask2idxs(valid_idx))(o)
    return _inner

def test_stock_normalize_applies_to_audio_spectrogram_only():
    x = AudioSpectrogram.create(torch.randn(4, 1, 8, 5) * 3 + 7, settings={'sr': 16000, 'hop_length': 4})
    mean, std = x.mean((0, 1, 3), keepdim=True), x.std((0, 1, 3), keepdim=True)
    norm = Normalize(mean, std, axes=(0, 1, 3))
    y = norm(x)
    assert isinstance(y, AudioSpectrogram) and y.sr == 16000
    assert torch.allclose(y.mean((0, 1, 3)), torch.zeros(8), atol=1e-5)
    assert torch.allclose(y.std((0, 1, 3)), torch.ones(8))
    assert torch.allclose(norm.decode(y), x, atol=1e-5)
    plain = TensorSpec(x.as_subclass(torch.Tensor))
    assert norm(plain) is plain  # fastnorm's own TensorSpec: stock Normalize still skips it (use SpecNormalize)

@pytest.mark.slow
def test_the_post_trains_three_ways_and_normalization_applies(tiny_esc50):
    path = tiny_esc50
    df = pd.read_csv(path/'meta'/'esc50.csv')
    cfg = AudioConfig.BasicSpectrogram(n_fft=128, hop_length=256)  # the post's n_fft 400, hop 200: smaller here
    a2s = AudioToSpec.from_cfg(cfg)
    def dblock(batch_tfms):
        return DataBlock(blocks=(AudioBlock, CategoryBlock), get_x=ColReader('filename', pref=path/'audio'),
                         splitter=CrossValidationSplitter(fold=1), batch_tfms=batch_tfms, get_y=ColReader('category'))
    dbunch = dblock([a2s]).dataloaders(df, bs=8)
    global_stats, channel_stats = StatsRecorder(), StatsRecorder(red_dims=(0, 1, 3))
    with torch.no_grad():
        for idx, (x, y) in enumerate(iter(dbunch.train)):
            global_stats.update(x)
            channel_stats.update(x)
    global_mean, global_std = global_stats.mean.float(), global_stats.std.float()
    channel_mean, channel_std = channel_stats.mean.float(), channel_stats.std.float()
    assert channel_mean.shape == (1, 1, 65, 1) and global_mean.shape == (1, 1, 1, 1)
    runs = {'baseline': [a2s], 'global': [a2s, Normalize(global_mean, global_std, axes=(0, 2, 3))],
            'channel': [a2s, Normalize(channel_mean, channel_std, axes=(0, 1, 3))]}
    batches = {}
    for name, tfms in runs.items():
        dls = dblock(tfms).dataloaders(df, bs=8)
        learn = cnn_learner(dls, resnet18, n_in=1, pretrained=False, loss_func=CrossEntropyLossFlat(),
                            metrics=[accuracy])
        learn.fit_one_cycle(1)
        assert len(learn.recorder.values) == 1
        ordered = dls.train.new(shuffle=False, drop_last=False)
        batches[name] = torch.cat([b[0].as_subclass(torch.Tensor) for b in ordered])
    raw, g, c = batches['baseline'], batches['global'], batches['channel']
    assert raw.shape == (32, 1, 65, 63) and float(raw.mean()) < -20  # dB spectrograms, far from 0
    assert torch.allclose(g, (raw - global_mean) / global_std, atol=1e-4)
    assert abs(float(g.mean())) < 1e-4 and abs(float(g.std(unbiased=False)) - 1) < 1e-3
    per_bin = c.mean((0, 1, 3))
    assert per_bin.abs().max() < 1e-3 and (c.std((0, 1, 3), unbiased=False) - 1).abs().max() < 1e-3

@pytest.mark.slow
def test_export_load_learner_and_predict_a_wav_in_a_new_process(tiny_esc50, tmp_path):
    "What a fastaudio user trains ships: the learner (with `Normalize()` set up from the data) predicts on one file"
    df = pd.read_csv(tiny_esc50/'meta'/'esc50.csv')
    a2s = AudioToSpec.from_cfg(AudioConfig.BasicSpectrogram(n_fft=128, hop_length=256))
    db = DataBlock(blocks=(AudioBlock, CategoryBlock), get_x=ColReader('filename', pref=tiny_esc50/'audio'),
                   splitter=RandomSplitter(seed=0), batch_tfms=[a2s, Normalize()], get_y=ColReader('category'))
    learn = cnn_learner(db.dataloaders(df, bs=8), resnet18, n_in=1, pretrained=False)
    learn.export(tmp_path/'learner.pkl')
    wav = tiny_esc50/'audio'/df.filename[0]
    code = ("from fastai.learner import load_learner\n"
            f"learn = load_learner({str(tmp_path/'learner.pkl')!r})\n"
            f"label, idx, probs = learn.predict({str(wav)!r})\n"
            "norm = [t for t in learn.dls.after_batch if type(t).__name__ == 'Normalize'][0]\n"
            "print(label in learn.dls.vocab, tuple(probs.shape), tuple(norm.mean.shape))")
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == f"True ({len(learn.dls.vocab)},) (1, 1, 1, 1)"
