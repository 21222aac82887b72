"""The embedded LLM's errors: one base class, `EmbeddedLLMError`, whose message says what failed and where."""

from __future__ import annotations

__all__ = ["EmbeddedLLMError", "ModelIntegrityError", "PartsUnavailable", "ServerNotInstalled"]


class EmbeddedLLMError(RuntimeError):
    """Something about the embedded LLM failed; the message says what and where."""


class PartsUnavailable(EmbeddedLLMError):
    """The part packages could be neither found installed nor downloaded (e.g. no package registry)."""


class ModelIntegrityError(EmbeddedLLMError):
    """The assembled GGUF does not have the pinned size or sha256; the file was not kept."""


class ServerNotInstalled(EmbeddedLLMError):
    """The llama.cpp server package (`xllamacpp`) is not installed in the interpreter that would run it."""
