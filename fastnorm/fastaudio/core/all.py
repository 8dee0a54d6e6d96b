"`from fastnorm.fastaudio.core.all import *`: fastaudio's core names"
from fasttransform import Pipeline  # noqa: F401  (fastaudio's core.all exported it)
from .signal import *
from .spectrogram import *
from .config import *
from .frontend import *
