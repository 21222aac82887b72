"""Runtime settings of a run: what LangGraph passes to every node as `runtime.context`. It holds no secret
(`models` names the environment variables that hold keys, never a key), so the copy the CLI stores in the
journal for `resume`, and the one LangGraph Server stores with a served run, are safe at rest.

A pydantic model, so a served graph (LangGraph Server, Studio) that receives the context as JSON gets it
validated and typed (`models` included) the same way `capnas run` does. These fields are the declaration of
every runtime setting: `capnas.settings` derives the run flags and config keys from them. `ServedContext` is
the same record with the one default a served graph needs to differ: its workspace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from capnas.agents.llm_config import AgentModels

Generation = Literal["code", "spec", "random"]
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class Context(BaseModel):
    # hide_input_in_errors: an error about a refused field (a pasted `api_key`) must not quote it
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    run_dir: str = Field(".capnas", min_length=1, description="workspace: journal, checkpoints, artifacts, reports, log")
    generation: Generation = Field("spec", description="code (the LLM writes the module), spec (it fills an "
                                                       "architecture spec) or random (no LLM: the baseline)")
    models: AgentModels | None = Field(None, description="per-role LLM endpoints; none: no LLM (random mode)")
    device: str = Field("auto", validate_default=True, description="cpu, cuda, cuda:N, or auto (the GPU when there is one)")
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads per training job "
                                                                 "(default: the cores shared by a round's jobs)")
    k_snippets: int = Field(2, ge=0, le=10, description="component snippets the coder is shown")
    max_repairs: int = Field(2, ge=0, le=10, description="repair rounds per candidate after contract violations")
    coder_tool_calls: int = Field(6, ge=0, le=50, description="tool calls (check_contract, run_snippet, submit) the "
                                                               "coder may make per attempt in code mode; 0: one "
                                                               "answer, no tools")
    spec_tools: bool = Field(False, description="give the coder its tools in spec mode too (small local models "
                                                "cannot drive a tool loop: by default spec mode is one forced call)")
    seed: int = Field(0, ge=0, description="seed of random generation, training and the LLM's sampling")
    confirm_task: bool = Field(False, description="stop after planning so a person confirms the task (chat)")
    concurrency: int = Field(2, ge=1, le=64, description="candidates per round, validated and trained at once")
    executor: Literal["local", "ray"] = Field("local", description="local (sandboxed child processes) or ray "
                                                                   "(the same jobs as Ray tasks)")
    ray_address: str | None = Field(None, description="Ray cluster address for --executor ray (none: a local instance)")
    final_test: bool = Field(True, description="score the val-chosen best model once on the test split when the "
                                               "search ends (a run with a baseline scores both arms after both end)")
    critic_edits: bool = Field(True, description="the critic answers a refine with typed edits to the parent's "
                                                 "spec, applied exactly to make the child (off: feedback text only)")
    mutation: bool = Field(True, description="a duplicate, an empty edit list or an unusable critic answer becomes "
                                             "a random change of 1-2 spec fields of the parent (off: the coder is "
                                             "asked again)")
    inherit_weights: bool = Field(True, description="a child of a trained parent starts from the parent's weights "
                                                    "wherever names and shapes match (off: a fresh init)")
    extra: dict[str, Any] = Field(default_factory=dict, description="free-form settings for integrations")

    @field_validator("device")
    @classmethod
    def _resolve_device(cls, value: str, info: ValidationInfo) -> str:
        """`auto` becomes the device this process can use, once, so every node and job reads a real one
        (unless only checking settings: `context={"check_only": True}`)."""
        if not _DEVICE.fullmatch(value):
            raise ValueError(f"unknown device {value!r}; use cpu, cuda, cuda:N or auto")
        if value != "auto" or (info.context or {}).get("check_only"):
            return value
        import torch  # only when asked to choose: `capnas --help` and settings checks stay fast

        return "cuda" if torch.cuda.is_available() else "cpu"

    def to_record(self) -> dict:
        """The description the journal keeps: endpoints, model names and key variables (no key is ever here)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_record(cls, record: dict, models: AgentModels | None) -> Context:
        """The Context `to_record` described, with `models` (keys come from the environment, not the journal).
        Records of older runs named the run dir `workspace`."""
        fields = {k: record[k] for k in cls.model_fields if k in record and k != "models"}
        if "workspace" in record and "run_dir" not in record:
            fields["run_dir"] = record["workspace"]
        return cls(**fields, models=models)


def served_workspace() -> str:
    """The workspace of a served run that names none: `~/.capnas`, outside any served tree. `langgraph dev`
    reloads the server on every `.py` file written below the folder it serves (a candidate is one), and each
    reload resumes the run from its last checkpoint."""
    return str(Path.home() / ".capnas")


class ServedContext(Context):
    """The Context of the graph `langgraph.json` serves (LangGraph Server, Studio): `run_dir` defaults to
    `served_workspace()` instead of `.capnas` in the current folder."""

    run_dir: str = Field(default_factory=served_workspace, min_length=1,
                         description="workspace: journal, checkpoints, artifacts, reports, log (default ~/.capnas; "
                                     "keep it outside the served folder, or `langgraph dev` reloads on every "
                                     "candidate it writes)")

    @field_validator("run_dir")
    @classmethod
    def _expand_home(cls, value: str) -> str:
        """`~/runs` in JSON means the server user's home (no shell expands it on the way)."""
        return str(Path(value).expanduser())
