"`from fastnorm.all import *` gives every user-facing name"
from . import __version__  # noqa: F401 (fastnorm.all.__version__)
from .dsp import *
from .audio import *
from .spec import *
from .synth import *
from .data import *
from .cache import *
from .stats import *
from .dlstats import *
from .norm import *
from .augment import *
from .show import *
from .report import *
from .compare import *
from .invert import *
from .waveaug import *
from .batchrand import *
from .noise import *
from .render import *
from .schemes import *
from .export import *
from .pcen import *
from .freqnorm import *
from .shift import *
