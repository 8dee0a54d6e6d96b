"""What decides a comparison's numbers (`CompareConfig`), checked before anything is loaded, and the presets of
`fastnorm compare`."""
from __future__ import annotations
import re
from dataclasses import dataclass, asdict
from ..checks import check_choice, check_frac, check_int, check_positive
from ..spec import spec_config
from ..augment import SPECAUGMENT_POLICIES
from ..adapt import ADAPT_METHODS, MIN_CLIPS
from .recipes import RECIPES
from .models import ARCHS
from .shift import parse_shifts

__all__ = ['CompareConfig', 'PRESETS', 'SUBSETS', 'parse_folds']

PRESETS = {
    # the CPU default: embedded dataset, small xresnet, minutes on 2 cores
    'quick': dict(data='synth', spec='quick', arch='xresnet18_tiny', epochs=8, runs=5, bs=32, lr=3e-3,
                  norms=('none', 'global', 'channel', 'pcen'),
                  shifts=('gain:-20', 'tilt:-3', 'noise:10', 'resample:8000')),
    # the published post: xresnet18 from scratch, 16 kHz, 201-bin dB spectrogram, 20 epochs, 5 runs (a GPU job)
    'paper': dict(data='esc50', spec='paper', arch='xresnet18', epochs=20, runs=5, bs=64, lr=1e-3,
                  norms=('none', 'global', 'channel'), shifts=()),
}

SUBSETS = ('esc10',)  # `--subset`: ESC-50's csv marks each subset's rows in a column of that name

def parse_folds(text:str)->tuple|str:
    "`--folds` as a tuple of folds: '1-5', '1,3', '2' or 'all' (kept as 'all': every fold of the data)"
    t = str(text).replace(' ', '')
    if t == 'all':
        return 'all'
    folds = []
    for part in t.split(','):
        m = re.fullmatch(r'(\d+)(?:-(\d+))?', part)
        if m is None or (m[2] is not None and int(m[2]) < int(m[1])):
            raise ValueError(f"--folds {text!r}: expected folds like 1-5, 1,3 or all")
        folds += list(range(int(m[1]), int(m[2] or m[1]) + 1))
    return tuple(folds)

def _check_folds(folds):
    "`--folds`: 'all', or distinct positive folds"
    if folds == 'all':
        return
    if not folds or any(not isinstance(f, int) or isinstance(f, bool) or f < 1 for f in folds):
        raise ValueError(f"--folds {folds}: expected positive whole-number folds like 1-5, 1,3 or all")
    if len(set(folds)) != len(folds):
        raise ValueError(f"--folds lists a fold twice: {','.join(map(str, folds))}")

def _check_norms(norms):
    "`--norms`: known recipes, at least one, none twice"
    bad = [n for n in norms if n not in RECIPES]
    if bad or not norms:
        raise ValueError(f"Unknown normalization(s) {bad or '(none given)'} in --norms: "
                         f"choose from {','.join(RECIPES)}")
    if len(set(norms)) != len(norms):
        raise ValueError(f"--norms lists a normalization twice: {','.join(norms)}")

@dataclass
class CompareConfig:
    """Everything that decides a comparison's numbers; saved as `config.json`, so `--resume` only continues the same
    experiment"""
    data:str = 'synth'
    fold:int = 1  # the validation fold of a single split
    folds:tuple|str|None = None  # cross-validation: each of these folds validates once ('all': every fold)
    subset:str|None = None  # one of `SUBSETS`: only the csv's rows marked so (e.g. 'esc10')
    norms:tuple = ('none', 'global', 'channel')  # keys of `RECIPES`
    runs:int = 3
    epochs:int = 8
    arch:str = 'xresnet18_tiny'
    bs:int = 32
    lr:float = 3e-3
    spec:str = 'quick'
    specaugment:str|None = None
    frac:float = 1.0
    seed:int = 0
    pretrained:bool = False
    speaker:str|None = None  # FSDD: validate on this speaker, train on the others (default: split by take)
    # waveform shifts the validation set is also evaluated under (not part of `key`: more may be added on resume)
    shifts:tuple = ()
    # adaptation methods (keys of `ADAPT_METHODS`) evaluated unshifted and under each shift, on at most `adapt_clips`
    # clips (default: the other half of the validation fold); neither in `key`: more may be added on resume
    adapt:tuple = ()
    adapt_clips:int|None = None
    def check(self):
        "Errors that need no data: before anything is loaded or trained"
        _check_norms(self.norms)
        check_choice('--arch', self.arch, ARCHS)
        if self.pretrained and not self.arch.startswith('resnet'):
            raise ValueError(f"--pretrained needs a torchvision resnet (--arch resnet18 or resnet34), not {self.arch}")
        if self.specaugment is not None:
            check_choice('--specaugment', self.specaugment, tuple(SPECAUGMENT_POLICIES))
        for k in ('runs', 'epochs', 'bs'):
            check_int(f'--{k}', getattr(self, k), lo=1)
        check_frac('--frac', self.frac, lo_open=True)
        check_positive('--lr', self.lr)
        spec_config(self.spec)
        parse_shifts(self.shifts)
        for m in self.adapt: check_choice('--adapt', m, tuple(ADAPT_METHODS))
        if self.adapt_clips is not None:
            check_int('--adapt-clips', self.adapt_clips, lo=MIN_CLIPS)
            if not self.adapt: raise ValueError("--adapt-clips needs --adapt (the methods to adapt with)")
        check_int('--fold', self.fold, lo=1)
        if self.folds is not None:
            if self.fold != 1:
                raise ValueError(f"--fold {self.fold} and --folds {self.folds}: give one of them")
            _check_folds(self.folds)
        if self.subset is not None:
            check_choice('--subset', self.subset, SUBSETS)
        return self
    @property
    def cv(self)->tuple:
        "The validation folds: those of `folds` (resolved from 'all' by `run_comparison`), else `fold` alone"
        return (self.fold,) if self.folds is None else tuple(self.folds)
    def key(self):
        """What must match on resume: all but `runs`, `shifts`, `adapt` and `adapt_clips` (more may be added);
        `speaker`, `subset` and `folds` only where they are set (so comparisons made before they existed resume), `fold`
        only where `folds` is not"""
        unset = lambda k, v: (k in ('speaker', 'subset', 'folds') and v is None) or (k == 'fold' and self.folds)
        skip = ('runs', 'shifts', 'adapt', 'adapt_clips')
        return {k: v for k, v in asdict(self).items() if k not in skip and not unset(k, v)}
