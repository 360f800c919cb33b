"""scaletrain: distributed training and hyper-parameter optimization for calorimeter GANs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scaletrain")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
