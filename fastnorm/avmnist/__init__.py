"""The AVMNIST audio recipe that `fastnorm export` runs: a dataset through a degradation scheme into `.npy` memmaps.
An application of the library: it imports `fastnorm`'s core, never the reverse."""
from .schemes import SCHEMES, Scheme, scheme_image, show_schemes
from .export import export_dataset

__all__ = ['SCHEMES', 'Scheme', 'scheme_image', 'show_schemes', 'export_dataset']
