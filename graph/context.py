"""Runtime settings of a run: what LangGraph passes to every node as `runtime.context`. Never checkpointed
(it may name endpoints and key variables); the CLI stores a secret-free copy in the journal for `resume`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from capnas.agents.llm import AgentModels

Generation = Literal["code", "spec", "random"]


@dataclass
class Context:
    workspace: str = ".capnas"  # journal, checkpoints and artifacts live here
    generation: Generation = "spec"
    models: AgentModels | None = None  # per-role LLM endpoints; None: no LLM (random mode, defaults)
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads inside training jobs (None: torch's default)
    k_snippets: int = 2  # component snippets the coder is shown
    max_repairs: int = 2  # coder repair rounds per candidate after contract violations
    seed: int = 0
    confirm_task: bool = False  # interrupt after planning so a person can confirm or edit the task
    concurrency: int = 1  # candidates per round, validated and trained at once
    executor: Literal["local", "ray"] = "local"  # where sandboxed jobs run: child processes here, or Ray tasks
    ray_address: str | None = None  # an existing Ray cluster (None: a local Ray instance)
    extra: dict = field(default_factory=dict)  # free-form settings for integrations

    def to_record(self) -> dict:
        """A secret-free description for the journal: endpoints and model names, never keys."""
        models = None
        if self.models is not None:
            models = self.models.model_dump(mode="json")
            for config in [models["default"], *models.get("roles", {}).values()]:
                config.pop("api_key", None)
        return {
            "workspace": self.workspace, "generation": self.generation, "device": self.device, "threads": self.threads,
            "k_snippets": self.k_snippets, "max_repairs": self.max_repairs, "seed": self.seed,
            "confirm_task": self.confirm_task, "concurrency": self.concurrency, "executor": self.executor,
            "ray_address": self.ray_address, "models": models, "extra": self.extra,
        }

    @classmethod
    def from_record(cls, record: dict, models: AgentModels | None) -> "Context":
        """The Context `to_record` described, with `models` (keys come from the environment, not the journal)."""
        fields = {k: record[k] for k in ("workspace", "generation", "device", "threads", "k_snippets",
                                          "max_repairs", "seed", "confirm_task", "concurrency", "executor", "ray_address",
                                          "extra") if k in record}
        return cls(**fields, models=models)

