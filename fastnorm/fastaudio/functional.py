"fastaudio's old top-level `functional` module path: the same functions as `fastnorm.fastaudio.augment.functional`"
from .augment.functional import *  # noqa: F401,F403
