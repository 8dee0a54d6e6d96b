"`from fastnorm.fastaudio.augment.all import *`: fastaudio's augmentation names"
from .preprocess import *
from .signal import *
from .spectrogram import *
from .functional import *
