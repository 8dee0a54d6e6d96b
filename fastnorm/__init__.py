"fastnorm: spectrograms ready for deep learning in the fastai ecosystem."
__version__ = "0.3.0"  # the project's one version number: pyproject.toml and the notebooks read it here
