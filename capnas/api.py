"""The Python face of capnas: run a design job from code, or hand it to a LangChain agent as a tool.

    from capnas import api
    summary = api.design(requirement="a small captioner", dataset="shapes", generation="random")
    tool = api.as_tool()          # a LangChain StructuredTool; agent.invoke(...) can call it
"""

from __future__ import annotations

import json
from typing import Any, Literal

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from capnas import runner
from capnas.settings import RunSettings


class DesignRequest(BaseModel):
    requirement: str = Field("", description="what the captioning model must do, in plain words")
    dataset: str = Field("shapes", description="shapes, shapes:N, or a path to a Karpathy/COCO captions json")
    generation: Literal["code", "spec", "random"] = Field("spec", description="how candidates are written")
    max_candidates: int = Field(4, ge=1, le=100, description="how many architectures to try")
    time_budget: float = Field(15.0, gt=0, description="minutes for the whole search")


def design(on_event=None, **settings: Any) -> dict[str, Any]:
    """Run one design job; keyword arguments are `capnas run` settings (see RunSettings).
    Returns the run summary (run_id, status, counts, best candidate with its metrics, tokens, cost)."""
    s = RunSettings(**settings)
    with runner.run_models(s.models(), s.generation, s.embedded_model) as (models, _):
        return runner.start(s.context(models), s.task().model_dump(), s.requirement, on_event=on_event)


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
