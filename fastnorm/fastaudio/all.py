"`from fastnorm.fastaudio.all import *`: every fastaudio name (the replacement of `from fastaudio.all import *`)"
from fastai.vision.augment import RandTransform  # noqa: F401  (fastaudio.all exported it)
from .augment.all import *
from .core.all import *
from .util import *
