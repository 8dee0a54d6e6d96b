"""`from fastnorm.all import *` gives the library's user-facing names. The applications are reached as packages:
`fastnorm.study` (the normalization comparison) and `fastnorm.avmnist` (the AVMNIST export)."""
from . import __version__  # noqa: F401 (fastnorm.all.__version__)
from .dsp import *
from .audio import *
from .spec import *
from .synth import *
from .data import *
from .layouts import *
from .cache import *
from .stats import *
from .dlstats import *
from .norm import *
from .augment import *
from .show import *
from .invert import *
from .waveaug import *
from .batchrand import *
from .noise import *
from .pcen import *
from .freqnorm import *
from .devaug import *
from .adapt import *
from .deploy import *
