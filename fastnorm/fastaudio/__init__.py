"""fastaudio 1.0.2's public API on fastnorm: old code runs after changing `fastaudio.` to `fastnorm.fastaudio.`

Module paths mirror fastaudio's: `fastnorm.fastaudio.all`, `.core.all`, `.augment.all`, `.util`, `.ci`. The names are
thin adapters over fastnorm's own types (`AudioTensor`, `TensorSpec`) and front end (`fastnorm.dsp`); no torchaudio.
Known differences are listed in the guide "Migrating from fastaudio" (docs/guides/fastaudio.md)."""
from .. import __version__  # noqa: F401  (fastnorm's version)

FASTAUDIO_VERSION = '1.0.2'  # the fastaudio release whose API this mirrors
