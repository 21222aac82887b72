"""Run settings: every `capnas run` flag is a key of the config file (YAML or JSON), and flags override it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from capnas.agents.llm import AgentModels, LLMConfig
from capnas.graph.context import Context
from capnas.tools.task import Budgets, Task


class SettingsError(ValueError):
    """A config file or flag that cannot be used; the message names the file or key."""


class RunSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requirement: str = Field("", description="what the person needs, in their words")
    dataset: str = Field("shapes:3000", description="shapes, shapes:N, or a Karpathy/COCO captions json")
    images: str | None = Field(None, description="image folder of a json dataset (default: images/ beside it)")
    generation: Literal["code", "spec", "random"] = Field("spec", description="code, spec or random")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint; none: the embedded local model")
    llm_model: str | None = Field(None, description="model name at that endpoint")
    llm_api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    llm_timeout_s: float = Field(120.0, gt=0, description="seconds before an LLM request is retried")
    llm_max_retries: int = Field(2, ge=0, description="retries on 429, 5xx and timeouts (with backoff)")
    embedded_model: str = Field("qwen2.5-coder-0.5b", description="local model served when no endpoint is given")
    llm_roles: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-role overrides, e.g. coder: {model: ...}")
    max_candidates: int = Field(8, ge=1, description="candidates generated in the whole run")
    min_candidates: int = Field(5, ge=0, description="trained candidates before the critic may end the search early")
    concurrency: int = Field(2, ge=1, le=64, description="candidates per round, validated and trained at once")
    executor: Literal["local", "ray"] = Field("local", description="local (sandboxed child processes) or ray (the same jobs as Ray tasks)")
    ray_address: str | None = Field(None, description="Ray cluster address for --executor ray (none: a local Ray instance)")
    time_budget: float = Field(14.0, gt=0, description="minutes for the whole run (checked between candidates)")
    epochs: int = Field(8, ge=1, description="max training epochs per candidate (early stopping may end sooner)")
    train_time_s: float = Field(80.0, gt=0, description="seconds of training per candidate")
    image_size: int | None = Field(None, description="square input size the contract fixes (default: 32 for shapes, 224 for image folders)")
    max_len: int = Field(28, description="caption length in tokens, BOS and EOS included")
    max_params: int = Field(5_000_000, description="parameter budget per model (frozen ones count)")
    max_latency_ms: float = Field(200.0, gt=0, description="inference latency budget per image on the device")
    frozen_encoders: bool = Field(False, description="keep pretrained encoders frozen (their tokens are computed once per dataset)")
    max_tokens: int | None = Field(None, description="LLM token budget for the run (stops it cleanly)")
    max_cost_usd: float | None = Field(None, description="LLM money budget for the run (needs prices per role)")
    device: str = Field("auto", description="cpu, cuda, cuda:N, or auto (the GPU when there is one)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per training job (default: the cores shared by a round's jobs)")
    run_dir: str = Field(".capnas", description="workspace: journal, checkpoints, artifacts, reports, log")
    seed: int = Field(0, description="seed of random generation and training")
    k_snippets: int = Field(2, description="component snippets the coder is shown")
    max_repairs: int = Field(2, description="repair rounds per candidate after contract violations")
    confirm: bool = Field(False, description="stop after planning so a person confirms the task (chat)")

    @classmethod
    def load(cls, config: Path | None, overrides: dict[str, Any]) -> RunSettings:
        data: dict[str, Any] = {}
        if config is not None:
            if not config.is_file():
                raise SettingsError(f"config file {config} does not exist")
            try:
                text = config.read_text()
                data = (json.loads(text) if config.suffix == ".json" else yaml.safe_load(text)) or {}
            except (yaml.YAMLError, json.JSONDecodeError) as err:
                raise SettingsError(f"config file {config} is not valid {'JSON' if config.suffix == '.json' else 'YAML'}: {err}") from None
            if not isinstance(data, dict):
                raise SettingsError(f"config file {config} must hold a mapping of settings, got {type(data).__name__}")
            data = {k.replace("-", "_"): v for k, v in data.items()}
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as err:
            where = f"config file {config}" if config else "options"
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise SettingsError(f"{where}: {problems}") from None

    def resolved_image_size(self) -> int:
        """Shapes are drawn to be legible at 32 px (4x cheaper to train than 64); photos get 224, the size the
        pretrained encoders were trained at."""
        if self.image_size is not None:
            return self.image_size
        return 32 if self.dataset.strip().startswith("shapes") else 224

    def task(self) -> Task:
        return Task(
            dataset=self.dataset, images=self.images, image_size=self.resolved_image_size(), max_len=self.max_len,
            max_params=self.max_params, max_latency_ms=self.max_latency_ms, frozen_encoders=self.frozen_encoders,
            budgets=Budgets(max_candidates=self.max_candidates, min_candidates=self.min_candidates, time_budget=self.time_budget, epochs=self.epochs,
                            train_time_s=self.train_time_s, max_tokens=self.max_tokens, max_cost_usd=self.max_cost_usd),
        )

    def models(self) -> AgentModels | None:
        if self.llm_base_url is None and self.llm_model is None:
            return None
        default = LLMConfig(model=self.llm_model or "default", base_url=self.llm_base_url, api_key_env=self.llm_api_key_env,
                            timeout_s=self.llm_timeout_s, max_retries=self.llm_max_retries)
        return AgentModels(default=default, roles=self.llm_roles)

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def context(self, models: AgentModels | None) -> Context:
        """The run's Context. Models given while none are configured are the embedded local model's: the
        Context records which one, so `capnas resume` can serve it again (its port dies with the process)."""
        embedded = models is not None and self.models() is None
        return Context(workspace=self.run_dir, generation=self.generation, models=models, device=self.resolved_device(),
                       threads=self.threads, k_snippets=self.k_snippets, max_repairs=self.max_repairs, seed=self.seed,
                       confirm_task=self.confirm, concurrency=self.concurrency, executor=self.executor,
                       ray_address=self.ray_address, extra={"embedded_model": self.embedded_model} if embedded else {})
