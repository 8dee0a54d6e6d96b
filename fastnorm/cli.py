"""The `fastnorm` command: `fastnorm compare` (the normalization comparison), `synth` (the embedded dataset), `export`,
`deploy` (a learner to one ONNX file)."""
from __future__ import annotations
import os, sys
from functools import partial, wraps
from pathlib import Path
from fastcore.script import call_parse, parse_cli, store_true

__all__ = ['compare', 'synth', 'export', 'deploy', 'adapt', 'compare_help', 'adapt_help', 'main']

@call_parse
def compare(
    data:str=None, # 'synth' (embedded dataset), 'esc50' (real ESC-50 via untar_data) or a folder (see above) [preset]
    fold:int=1, # validation fold (ESC-50 layout); FSDD uses takes 0-4 as validation
    folds:str=None, # cross-validation, e.g. 1-5, 1,3 or all: each fold validates once, training on the others
    subset:str=None, # esc10: only the rows esc50.csv marks esc10 (ESC-10's 10 classes)
    norms:str=None, # comma list of normalizations (see above) [preset]
    shift:str=None, # comma list of validation shifts (see above), or 'none' [preset]
    adapt:str=None, # comma list of adaptation methods (see below): scored unshifted and under each shift, cross-fitted
    adapt_clips:int=None, # adapt on this many clips (at least 8) outside the ones scored [default: the other half]
    speaker:str=None, # FSDD: validate on this speaker, train on the others (a speaker shift); default: split by take
    runs:int=None, # seeded runs per normalization [preset]
    epochs:int=None, # epochs per run (fit_one_cycle) [preset]
    arch:str=None, # xresnet18_tiny, xresnet18, xresnet34, resnet18, resnet34 [preset]
    bs:int=None, # batch size [preset]
    lr:float=None, # maximum learning rate [preset]
    spec:str=None, # quick (16 kHz, 64 mels), esc50 (44.1 kHz, 128 mels) or paper (16 kHz, 201 bins) [preset]
    specaugment:str=None, # SpecAugment policy (LB, LD, SM, SS); off by default
    frac:float=1.0, # fraction of training batches the statistics are computed on
    preset:str='quick', # quick: minutes on a CPU (embedded data); paper: the post's setup (real ESC-50, for a GPU)
    seed:int=0, # seed of the first run; run r uses seed+r
    out:str='runs/compare', # folder for results.csv, summary.md, comparison.png, curves.png, statistics plots, models/
    resume:store_true=False, # complete the comparison in --out: train only the missing runs, evaluate only new shifts
    pretrained:store_true=False, # ImageNet-pretrained resnet (--arch resnet18/34); pair it with --norms imagenet
    no_progress:store_true=False, # no progress bars
):
    """Compare spectrogram normalizations on ESC-50 or a dataset in its layout, also under deployment shifts; runs
    under torchrun too. [preset]: the --preset's value unless given. (`fastnorm compare --help` adds the names
    `--norms` and `--shift` take, from their registries.)"""
    from .study import CompareConfig, PRESETS, run_comparison
    from .study.config import parse_folds
    from torch.distributed.elastic.multiprocessing.errors import record
    if preset not in PRESETS:
        raise SystemExit(f"fastnorm compare: unknown --preset {preset!r}: choose from {', '.join(PRESETS)}")
    p = dict(PRESETS[preset])
    if data is not None:
        p['data'] = data
    given = dict(runs=runs, epochs=epochs, arch=arch, bs=bs, lr=lr, spec=spec)
    p.update({k: v for k, v in given.items() if v is not None})
    if norms is not None:
        p['norms'] = tuple(norms.replace(' ', '').split(','))
    if shift is not None:
        p['shifts'] = () if shift.strip() == 'none' else tuple(s for s in shift.replace(' ', '').split(',') if s)
    if adapt is not None:
        p['adapt'] = tuple(m for m in adapt.replace(' ', '').split(',') if m)
    try:
        cfg = CompareConfig(fold=fold, adapt_clips=adapt_clips, folds=None if folds is None else parse_folds(folds),
                            subset=subset,
                            specaugment=specaugment, frac=frac, seed=seed, pretrained=pretrained, speaker=speaker, **p)
        # under torchrun, `record` hands a failing rank's traceback to torchrun's report (which stops the other ranks)
        record(run_comparison)(cfg, out=out, resume=resume, progress=not no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        if int(os.environ.get('WORLD_SIZE', 1)) > 1: raise
        raise SystemExit(f"fastnorm compare: error: {e}")

@call_parse
def synth(
    dest:str=None, # folder to make it in [default: under $FASTNORM_HOME or ~/.fastnorm]
    seed:int=0, # the dataset is a pure function of its arguments
    n_classes:int=10, # sound families (at most 12)
    clips_per_class:int=40, # clips per class, spread over 5 folds
    seconds:float=2.0, # clip length
    sr:int=16000, # sample rate (Hz)
):
    "Make (or find) the embedded synthetic dataset in ESC-50's layout and print its folder"
    from .synth import synth_esc50
    try:
        path = synth_esc50(dest, seed=seed, n_classes=n_classes, clips_per_class=clips_per_class, seconds=seconds,
                           sr=sr)
    except (ValueError, FileExistsError) as e:
        raise SystemExit(f"fastnorm synth: error: {e}")
    print(path)

@call_parse
def export(
    out:str=None, # folder to write: data.npy [N,H,W], labels.npy, export.json, manifest/ (required)
    data:str=None, # dataset folder in FSDD's, ESC-50's or class folders' layout [default: the embedded dataset]
    labels:str=None, # labels .npy to follow, e.g. AVMNIST's train_labels.npy, cycling through each label's recordings
    scheme:str='burst_noise', # clean, extreme_noise, multi_band, burst_noise, aliased, distorted
    noise:str=None, # folder of noise recordings, or ESC-50 [default: coloured noise, see --color]
    split:str='all', # train, test or all: the items (FSDD: takes 0-4 are test) and the noise clips, kept disjoint
    size:str='112x112', # HEIGHTxWIDTH of each row
    format:str='image', # image: uint8 gray_r picture (dark = loud, low frequencies at the bottom); db: float32 dB
    mels:store_true=False, # with --format db: log-mel with HEIGHT bands instead of linear-frequency dB
    color:str='pink', # the coloured noise used without --noise: pink or white
    noise_per_class:int=None, # ESC-50 noise: clips per category (AVMNIST's recipe: 1) [default: all of the split]
    test_fold:int=5, # ESC-50 layout (data and noise): the test fold
    sr:int=None, # resample everything to this rate (Hz) [default: the first item's]
    seed:int=0, # the same seed gives the same bytes
    bs:int=256, # rows per batch and per manifest
    device:str=None, # cpu, cuda, ... [default: cuda when available]
    resume:store_true=False, # complete an interrupted export in --out
    no_progress:store_true=False, # no progress bar
):
    "Export a dataset through an AVMNIST degradation scheme as .npy (the embedded dataset, coloured noise by default)"
    from .avmnist import export_dataset
    if out is None:
        raise SystemExit("fastnorm export: error: --out DIR is required")
    try:
        path = export_dataset(out, data=data, labels=labels, scheme=scheme, noise=noise, split=split, size=size,
                              format=format, mels=mels, color=color, noise_per_class=noise_per_class,
                              test_fold=test_fold, sr=sr, seed=seed, bs=bs, device=device, resume=resume,
                              progress=not no_progress)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise SystemExit(f"fastnorm export: error: {e}")
    print(path)

@call_parse
def deploy(
    learner:str, # a learner saved with `learn.export()` (.pkl)
    out:str, # the .onnx file to write: float32 waveforms [batch, samples] in, class probabilities out
    opset:int=None, # ONNX opset [default: the exporter's]
    no_check:store_true=False, # skip comparing onnxruntime's probabilities with the learner's before writing
):
    """Export a learner's whole inference (crop/pad, waveform and spectrogram normalization, STFT, mel, dB or PCEN,
    network, softmax) to one ONNX file, its vocabulary and settings in the metadata; print the file"""
    from .deploy import to_onnx
    try: path = to_onnx(learner, out, opset=opset, check=not no_check)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        raise SystemExit(f"fastnorm deploy: error: {e}")
    print(path)

@call_parse
def adapt(
    learner:str, # a learner saved with `learn.export()` (.pkl)
    clips:str, # a folder of unlabeled clips from the new setup (or one file); at least 8
    method:str='match', # an adaptation method (see above)
    out:str=None, # the adapted learner's .pkl (required)
    onnx:str=None, # also write the adapted learner as one ONNX file
    std_floor:float=0.25, # match: a re-fitted std is at least this fraction of the training std
    mean_only:store_true=False, # match: move the mean only
    train_stats:str=None, # match: training per-bin statistics (band_stats(dls.train).save) unless it has FreqSpecNorm
    bs:int=None, # batch size over the clips [default: the learner's]
):
    """Adapt a trained learner to a new recording setup from unlabeled clips recorded there; write the adapted learner
    (and its ONNX file); print them. (`fastnorm adapt --help` adds the methods, from their registry.)"""
    from .adapt import adapt as _adapt
    import warnings
    from fastai.learner import load_learner
    from .deploy import to_onnx
    from .stats import StatsRecorder
    if out is None: raise SystemExit("fastnorm adapt: error: --out ADAPTED.pkl is required")
    try:
        if not Path(learner).is_file(): raise FileNotFoundError(f"learner file not found: {learner}")
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # load_learner's reminder that pickles run code
            learn = load_learner(learner, cpu=True)
        stats = None if train_stats is None else StatsRecorder.load(train_stats)
        new = _adapt(learn, clips, method, std_floor=std_floor, mean_only=mean_only, train_stats=stats, bs=bs)
        new.export(Path(out).absolute())
        print(out)
        if onnx is not None: print(to_onnx(new, onnx))
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        raise SystemExit(f"fastnorm adapt: error: {e}")

# the subcommands, with the line `fastnorm --help` gives each
COMMANDS = {'compare': (compare, "compare spectrogram normalizations on ESC-50 or a dataset in its layout"),
            'synth': (synth, "make the embedded synthetic dataset in ESC-50's layout"),
            'export': (export, "export a dataset through an AVMNIST degradation scheme as .npy (images or dB)"),
            'deploy': (deploy, "export a trained learner to one ONNX file: waveforms in, class probabilities out"),
            'adapt': (adapt, "adapt a trained learner to a new recording setup from unlabeled clips")}

def compare_help()->str:
    """`fastnorm compare`'s description in `--help`: its docstring's first sentences, then the words of `--norms`
    (`study.recipes.RECIPES`), of `--shift` (`study.shift.SHIFTS`) and the layouts of a `--data` folder
    (`layouts.LAYOUTS`), read from the registries"""
    from .study.recipes import RECIPES
    from .study.shift import SHIFTS
    from .layouts import LAYOUTS
    head = compare.__doc__.split(' (`fastnorm compare --help`')[0]
    return (f"{head}\nNormalizations: {' '.join(RECIPES)}.\n"
            f"Shifts: {', '.join(e.form for e in SHIFTS.values())}.\n"
            f"Data folders: {'; '.join(l.doc for l in LAYOUTS.values() if l.trains)}.\n"
            f"Adaptation (--adapt): {' '.join(_adapt_methods())}: each half of the validation fold is scored by the "
            "model adapted, without labels, to the other half.")

def _adapt_methods()->dict:
    from .adapt import ADAPT_METHODS
    return ADAPT_METHODS

def adapt_help()->str:
    "`fastnorm adapt`'s description in `--help`: its docstring's first sentence, then the methods (`ADAPT_METHODS`)"
    head = adapt.__doc__.split(' (`fastnorm adapt --help`')[0]
    return head + '\nMethods: ' + '; '.join(f"{k}: {v.doc}" for k, v in _adapt_methods().items()) + '.'

# the commands whose description is made from registries when they run
_HELP = {'compare': compare_help, 'adapt': adapt_help}

def main():
    "Entry point of the `fastnorm` console script"
    args = sys.argv[1:]
    if not args or args[0] in ('-h', '--help') or args[0] not in COMMANDS:
        print(f"usage: fastnorm {{{','.join(COMMANDS)}}} [--help] ...\n\n" +
              '\n'.join(f"  {k:<8} {line}" for k, (_, line) in COMMANDS.items()))
        if args and args[0] not in ('-h', '--help'):
            print(f"\nfastnorm: unknown command {args[0]!r}", file=sys.stderr)
            sys.exit(2)
        return
    cmd, sys.argv = COMMANDS[args[0]][0], [f'fastnorm {args[0]}'] + args[1:]
    if args[0] in _HELP:
        cmd = wraps(cmd)(partial(cmd))  # the same command with the generated description, the module's left as it is
        cmd.__doc__ = _HELP[args[0]]()
    pargs, kwargs, _ = parse_cli(cmd)
    cmd(*pargs, **kwargs)
