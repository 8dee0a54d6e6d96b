"""The normalization comparison that `fastnorm compare` runs, an application of the library: it imports `fastnorm`'s
core, never the reverse. Its modules, top-down: `run` (the phases), `config`, `recipes`, `datasets`, `models`, `jobs`
(train or evaluate one run), `evaluate` (under deployment shifts, from `shift`), `results` (the CSV tables), `ranks`
(torch.distributed), `report`."""
from .config import CompareConfig, PRESETS
from .models import make_learner
from .run import run_comparison

__all__ = ['CompareConfig', 'PRESETS', 'make_learner', 'run_comparison']
