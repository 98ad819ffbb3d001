"""Sparse Shift Autoencoders (SSAE): identifiable steering vectors from multi-concept shifts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ssae")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"
