"""The typed `Task`: what one design run is asked to do. The planner fills it from free text, a person
confirms it, and every job below reads its settings from it (never from prompts)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["cider", "bleu_4", "meteor", "rouge_l"]


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(6, ge=1, le=1000, description="candidates generated in the whole run")
    min_candidates: int = Field(0, ge=0, le=1000, description="trained candidates before the critic may end the search "
                                                                "(small models tend to stop after the first result)")
    time_budget: float = Field(15.0, gt=0, description="wall-clock minutes for the whole run")
    epochs: int = Field(6, ge=1, le=500, description="training epochs per candidate (early stopping may end sooner)")
    train_time_s: float = Field(120.0, gt=0, description="wall-clock seconds of training per candidate")
    max_tokens: int | None = Field(None, gt=0, description="LLM tokens for the whole run")
    max_cost_usd: float | None = Field(None, gt=0, description="LLM spending for the whole run")


class Task(BaseModel):
    """One captioning design task. Defaults are the embedded demo: shapes on a CPU in minutes."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("shapes", description="shapes, shapes:N, or a path to a Karpathy/COCO captions json")
    images: str | None = Field(None, description="image folder for a json dataset (default: images/ beside it)")
    image_size: int = Field(64, ge=16, le=512, description="square input size the contract fixes")
    max_len: int = Field(16, ge=4, le=64, description="caption length in tokens, BOS and EOS included")
    min_count: int = Field(1, ge=1, description="minimum train-caption count for a word to enter the vocabulary")
    max_params: int = Field(5_000_000, ge=1000, description="parameter budget per model")
    max_latency_ms: float = Field(200.0, gt=0, description="inference latency budget per image on the target device")
    objective: Metric = Field("cider", description="validation metric the search maximizes")
    families: list[str] = Field(default_factory=list, description="encoder/decoder families the person asked for, if any")
    frozen_encoders: bool = Field(False, description="pretrained encoders stay frozen (their image tokens are "
                                                     "computed once and shared by every job); the rest still train")
    notes: str = Field("", description="anything else the person said that matters")
    budgets: Budgets = Field(default_factory=Budgets)
