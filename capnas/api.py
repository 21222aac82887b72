"""The Python face of capnas: run a design job from code, or hand it to a LangChain agent as a tool.

    from capnas import api
    summary = api.design(requirement="a small captioner", dataset="shapes", generation="random")
    tool = api.as_tool()          # a LangChain StructuredTool; agent.invoke(...) can call it
"""

from __future__ import annotations

import json
import copy
from typing import Any

from langchain_core.tools import StructuredTool
from pydantic import create_model

from capnas import runner
from capnas.settings import RunSettings

# What an agent may choose when it calls the tool: a few run settings, declared where every setting is.
TOOL_KEYS = ("requirement", "dataset", "generation", "max_candidates", "time_budget")
DesignRequest = create_model("DesignRequest", **{k: (RunSettings.model_fields[k].annotation,
                                                    copy.deepcopy(RunSettings.model_fields[k])) for k in TOOL_KEYS})


def design(on_event=None, **settings: Any) -> dict[str, Any]:
    """Run one design job; keyword arguments are `capnas run` settings (see RunSettings).
    Returns the run summary (run_id, status, counts, best candidate with its metrics, tokens, cost).
    Raises `capnas.settings.SettingsError` naming a bad setting before anything starts."""
    s = RunSettings.load(None, settings)
    with runner.run_models(s.models(), s.generation, s.embedded_model) as (models, _):
        return runner.start(s.context(models), s.task().model_dump(), s.requirement, on_event=on_event,
                            baseline=s.baseline)


def as_tool(**defaults: Any) -> StructuredTool:
    """A LangChain tool that runs a capnas design job and returns its summary as JSON text.
    `defaults` are RunSettings applied to every call (e.g. llm_base_url, llm_model, run_dir, device)."""

    def run_design(**request: Any) -> str:
        return json.dumps(design(**{**defaults, **request}))

    return StructuredTool.from_function(
        func=run_design,
        name="design_captioning_model",
        description=("Search for an image-captioning neural network (CNN/ViT encoder with LSTM/GRU/Transformer "
                     "decoder) that satisfies the requirement; trains candidates in a sandbox and scores them with "
                     "COCO caption metrics. Returns the best candidate and its val metrics as JSON."),
        args_schema=DesignRequest,
    )
