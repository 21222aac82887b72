"""capnas: LLM agents that design image-captioning networks under a machine-checked contract."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("capnas")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
