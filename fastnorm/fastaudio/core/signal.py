"fastaudio's `AudioTensor`, file getters and dataset URLs, on fastnorm's `AudioTensor` and soundfile (no torchaudio)."
from __future__ import annotations
import mimetypes, random, tarfile
from pathlib import Path
import torch, soundfile as sf
from fastai.data.external import URLs as _FastaiURLs
from fastai.data.transforms import get_files
from fasttransform import Transform
from ...audio import AudioTensor as _FnAudioTensor, load_audio

__all__ = ['audio_extensions', 'get_audio_files', 'AudioGetter', 'URLs', 'tar_extract_at_filename', 'AudioTensor',
           'show_audio_signal', 'OpenAudio']

audio_extensions = tuple(str.lower(k) for k, v in mimetypes.types_map.items() if v.startswith('audio/'))

def get_audio_files(path, recurse=True, folders=None):
    "Get audio files in `path` recursively, only in `folders`, if specified."
    return get_files(path, extensions=audio_extensions, recurse=recurse, folders=folders)

def AudioGetter(suf='', recurse=True, folders=None):
    "A `get_audio_files` function searching `path/suf`, passing `recurse` and `folders` along"
    def _inner(o, recurse=recurse, folders=folders): return get_audio_files(Path(o)/suf, recurse, folders)
    return _inner

class URLs(_FastaiURLs):
    "fastai's `URLs` with fastaudio's datasets added (a subclass: fastai's own class is left as it is)"
    SPEAKERS10 = 'http://www.openslr.org/resources/45/ST-AEDS-20180100_1-OS.tgz'
    ESC50 = 'https://github.com/karoldvl/ESC-50/archive/master.zip'
    SAMPLE_SPEAKERS10 = 'https://github.com/fastaudio/10_Speakers_Sample/archive/10_speakers_sample.zip'

def tar_extract_at_filename(fname, dest):
    "Extract `fname` to `dest`/`fname.name` folder using `tarfile`"
    dest = Path(dest)/Path(fname).with_suffix('').name
    with tarfile.open(fname, 'r:gz') as t: t.extractall(dest, filter='data')

_LOAD_ARGS = ('frame_offset', 'num_frames', 'normalize', 'channels_first', 'format')

class AudioTensor(_FnAudioTensor):
    "fastaudio's `AudioTensor`: a fastnorm `AudioTensor` `[C,N]` with `sr`, `nsamples`, `nchannels`, `duration`"
    def __new__(cls, x, sr=None, **kwargs): return super().__new__(cls, x, sr=sr, **kwargs)

    @classmethod
    def create(cls, fn, cache_folder=None, # read `cache_folder/fn.name` instead (see `preprocess_audio_folder`)
               frame_offset:int=0, # first frame to read
               num_frames:int=-1, # frames to read, -1: to the end
               normalize:bool=True, # float samples in [-1, 1] (the only choice: soundfile decodes to float)
               channels_first:bool=True, # `[C,N]` (the only choice)
               format=None, # ignored: soundfile detects the format
              ):
        "Load an audio file at its own rate and channels, as torchaudio.load did (through soundfile)"
        if not normalize:
            raise NotImplementedError("`normalize=False` (integer samples) is not supported: samples are float")
        if not channels_first:
            raise NotImplementedError("`channels_first=False` is not supported: AudioTensors are `[C,N]`")
        fn = Path(fn)
        if cache_folder is not None: fn = Path(cache_folder)/fn.name
        x, sr = load_audio(fn, sr=None, mono=False)
        x = x[:, frame_offset:] if num_frames < 0 else x[:, frame_offset:frame_offset + num_frames]
        return cls(x, sr=sr)

    @property
    def nchannels(self): return self.shape[-2]

    def hear(self):
        "Listen to the clip in a notebook: an HTML player"
        from IPython.display import Audio, display
        display(Audio(self.detach().cpu().numpy(), rate=self.sr))

    def show(self, ctx=None, hear:bool=True, ax=None, title:str='', **kwargs):
        "Plot the waveform (each channel); `hear=True` also shows a player"
        if hear: self.hear()
        return show_audio_signal(self, ctx=ctx, ax=ax, title=title, **kwargs)

    def apply_gain(self, gain:float):
        "A copy multiplied by `gain`"
        return self * gain

    def cutout(self, cut_pct:float):
        "A copy with `int(nsamples*cut_pct)` consecutive samples zeroed at a random start (python `random`)"
        n = int(self.nsamples * cut_pct)
        start = random.randint(0, self.nsamples - n)
        out = self.clone()
        out[..., start:start + n] = 0
        return out

    def lose_signal(self, loss_pct:float):
        "A copy with each sample time dropped (all channels) with probability `loss_pct`"
        return self * (torch.rand(self.shape[-1], device=self.device) > loss_pct).to(self.dtype)

    def save(self, fn, overwrite:bool=True):
        "Write a 32-bit float WAV (as torchaudio.save did for float tensors)"
        fn = Path(fn).expanduser()
        if not overwrite and fn.exists(): raise FileExistsError(f"File already exists: {fn}")
        sf.write(str(fn), self.detach().cpu().float().numpy().T, self.sr, subtype='FLOAT', format='WAV')

def show_audio_signal(ai, ctx=None, ax=None, title:str='', **kwargs):
    "Plot each channel of `ai` against time (s) on `ax` (or `ctx`, or a new figure)"
    ax = ax if ax is not None else ctx
    ax = _FnAudioTensor.show(ai, ctx=ax, **kwargs)
    if title: ax.set_title(title)
    return ax

class OpenAudio(Transform):
    "Transform: an index into `items` to the `AudioTensor` of that file (decodes back to the path)"
    def __init__(self, items):
        super().__init__()
        self.items = items
    def encodes(self, i): return AudioTensor.create(self.items[i])
    def decodes(self, i)->Path: return self.items[i]
