"""The typed `Task`: what one design run is asked to do. The planner fills it from free text, a person
confirms it, and every job below reads its settings from it (never from prompts).

These fields are the declaration of every task setting: name, type, bounds, default and help live here once.
`capnas run`'s flags, its config keys and the README's table are derived from them (`capnas.settings`), so
`Task()` (what LangGraph Server and `build_graph` users get) is exactly what `capnas run` runs with no flags.
A unit that is not minutes is in the field's name (`_s`, `_ms`, `_usd`)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from capnas.tools.design.components import decoders, encoders

Metric = Literal["cider", "bleu_4", "meteor", "rouge_l"]


def is_synthetic(dataset: str) -> bool:
    """The built-in `shapes` set (as opposed to a captions json of real images)."""
    return dataset.strip().split(":", 1)[0] == "shapes"


def default_image_size(dataset: str) -> int:
    """Shapes are drawn to be legible at 32 px (4x cheaper to train than 64); photos get 224, the size the
    pretrained encoders were trained at."""
    return 32 if is_synthetic(dataset) else 224


def default_min_count(dataset: str) -> int:
    """Real captions: the usual threshold of 5 (Flickr8k: 2,538 words instead of 7,373 with every singleton);
    the synthetic set's few words all occur often, so it keeps them all."""
    return 1 if is_synthetic(dataset) else 5


def family_names() -> tuple[list[str], list[str]]:
    """(encoder families, decoder families) of the component library."""
    return [c.name for c in encoders()], [c.name for c in decoders()]


class Budgets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_candidates: int = Field(8, ge=1, le=1000, description="candidates generated in the whole run")
    min_candidates: int = Field(5, ge=0, le=1000, description="trained candidates before the critic may end the "
                                                              "search early (small models tend to stop after one)")
    # Older journals wrote time_budget_min; they still resume.
    time_budget: float = Field(14.0, gt=0, le=60 * 24 * 30, validation_alias=AliasChoices("time_budget", "time_budget_min"),
                               description="minutes for the whole run (checked between candidates)")
    epochs: int = Field(8, ge=1, le=500, description="max training epochs per candidate (early stopping may end sooner)")
    train_time_s: float = Field(80.0, gt=0, description="seconds of training per candidate (per rung with `rungs`)")
    # Successive halving (asynchronous, as ASHA): cheap first looks for all, more epochs for the promising.
    rungs: list[int] = Field(default_factory=list, description="epochs at each rung of a multi-fidelity schedule, "
                             "e.g. 1,3,8: every candidate trains the first rung, the best of those that reached a "
                             "rung train on from their checkpoint to the next (none: every candidate trains `epochs`)")
    promote: float = Field(0.5, gt=0, le=1, description="fraction of the candidates that reached a rung that go on "
                                                        "to the next, best val objective first (with `rungs`)")
    max_tokens: int | None = Field(None, gt=0, description="LLM token budget for the run (stops it cleanly)")
    max_cost_usd: float | None = Field(None, gt=0, description="LLM money budget for the run (needs prices per role)")

    @field_validator("rungs", mode="before")
    @classmethod
    def _rung_list(cls, value):
        """`1,3,8` (a flag, a chat edit) is the list [1, 3, 8]."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("rungs")
    @classmethod
    def _rungs_increase(cls, value: list[int]) -> list[int]:
        if any(not 1 <= e <= 500 for e in value) or any(a >= b for a, b in zip(value, value[1:])):
            raise ValueError(f"rungs {','.join(map(str, value))}: each rung is a number of epochs between 1 and 500, "
                             "more than the rung before (e.g. 1,3,8)")
        return value


class Task(BaseModel):
    """One captioning design task. Defaults are the embedded demo: shapes on a CPU in minutes."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field("shapes:3000", min_length=1, description="shapes, shapes:N, or a Karpathy/COCO captions json")
    images: str | None = Field(None, description="image folder of a json dataset (default: images/ beside it)")
    image_size: int | None = Field(None, ge=16, le=512, description="square input size in px the contract fixes "
                                                                   "(default: 32 for shapes, 224 for photos)")
    max_len: int = Field(28, ge=4, le=64, description="caption length in tokens, BOS and EOS included")
    min_count: int | None = Field(None, ge=1, le=1000, description="train-caption count for a word to enter the "
                                                                  "vocabulary (default: 1 for shapes, 5 for real captions)")
    max_params: int = Field(5_000_000, ge=1000, le=10_000_000_000, description="parameter budget per model (frozen ones count)")
    max_latency_ms: float = Field(200.0, gt=0, description="inference latency budget per image on the device")
    objective: Metric = Field("cider", description="validation metric the search maximizes")
    families: list[str] = Field(default_factory=list, description="encoder and decoder families to search "
                                                                  "(default: all)")
    frozen_encoders: bool = Field(False, description="keep pretrained encoders frozen (their tokens are computed "
                                                     "once per dataset)")
    notes: str = Field("", description="anything else the person said that matters")
    budgets: Budgets = Field(default_factory=Budgets)

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: list[str]) -> list[str]:
        known_enc, known_dec = family_names()
        known = known_enc + known_dec
        if unknown := [f for f in value if f not in known]:
            raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                             f"encoders: {', '.join(known_enc)}; decoders: {', '.join(known_dec)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _dataset_defaults(self) -> Task:
        """Sizes that follow the data are filled in once, here, so every reader sees numbers."""
        if self.image_size is None:
            self.image_size = default_image_size(self.dataset)
        if self.min_count is None:
            self.min_count = default_min_count(self.dataset)
        return self
