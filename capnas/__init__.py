"""capnas: LLM agents that design image-captioning networks under a machine-checked contract.

    import capnas
    summary = capnas.design(requirement="a small captioner", generation="random")   # one design job
    tool = capnas.as_tool()                                                          # a LangChain tool
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("capnas")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "as_tool", "design"]


def __getattr__(name: str) -> Any:
    # Lazily: the API pulls in LangGraph and torch, which `capnas --help` should not pay for.
    if name in ("as_tool", "design"):
        from capnas import api

        return getattr(api, name)
    raise AttributeError(f"module 'capnas' has no attribute {name!r}")
