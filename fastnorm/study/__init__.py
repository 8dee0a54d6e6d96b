"""The normalization comparison that `fastnorm compare` runs: recipes, configuration, the run in phases, evaluation under
deployment shifts, the report. An application of the library: it imports `fastnorm`'s core, never the reverse."""
from .compare import CompareConfig, PRESETS, run_comparison

__all__ = ['CompareConfig', 'PRESETS', 'run_comparison']
