"""The contract as data: clauses with stable codes, shapes, vocabulary, budgets and the import allow-list.

Everything a check needs is a field here, and `Contract.render()` turns the same fields into the text the
coder reads, so the prompt and the checks cannot disagree. Concrete contracts (caption-net-v1) are built by
factories in their own modules.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CODE_PATTERN = r"^[A-Z]{3}-\d{3}$"

Stage = Literal["static", "probe", "sandbox"]


class Clause(BaseModel):
    """One rule of the contract. `code` is stable across versions: agents, tests and journals key on it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = Field(pattern=CODE_PATTERN)
    rule: str = Field(min_length=1, description="one line, what must hold")
    hint: str = Field(min_length=1, description="one line, how to satisfy it")
    stage: Stage = Field(description="where it is checked: static (AST), probe (in the sandbox), sandbox (limits)")

    @field_validator("rule", "hint")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value:
            raise ValueError("rules and hints are one line each")
        return value


class Violation(BaseModel):
    """One failed clause, as the coder and the CLI see it."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=CODE_PATTERN)
    clause: str  # the clause's rule text
    message: str  # what was found
    line: int | None = None  # 1-based line in the candidate file, when one is known
    hint: str


class SpecialIds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pad: int = 0
    bos: int = 1
    eos: int = 2
    unk: int = 3

    @model_validator(mode="after")
    def _distinct(self) -> SpecialIds:
        ids = [self.pad, self.bos, self.eos, self.unk]
        if len(set(ids)) != 4 or min(ids) < 0:
            raise ValueError(f"special ids must be distinct and non-negative, got {ids}")
        return self


class Budgets(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_params: int = Field(gt=0, description="parameters (trainable and frozen) in Net")
    max_latency_ms: float = Field(gt=0, description="inference milliseconds per image on the target device")
    max_probe_s: float = Field(gt=0, description="seconds for the whole dynamic probe")
    max_memory_mb: int = Field(gt=0, description="resident memory of the probe process")


class Contract(BaseModel):
    """A model API contract. Immutable; `model_dump()` is what travels into the sandbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    summary: str
    input_shape: tuple[int, int, int, int]  # (B, C, H, W); B is nominal
    vocab_size: int = Field(gt=4)
    special_ids: SpecialIds = Field(default_factory=SpecialIds)
    max_len: int = Field(ge=3, description="caption length in tokens, BOS and EOS included")
    budgets: Budgets
    # A module is importable when it or a parent is in `allowed_imports` and neither it nor a parent is in
    # `forbidden_imports` ("torch" allows torch.nn.functional but not torch.hub).
    allowed_imports: tuple[str, ...]
    forbidden_imports: tuple[str, ...]
    # Dotted names reached through an import (torch.load) that may not be used, even without a call.
    forbidden_attributes: tuple[str, ...]
    # Builtins grouped by the clause they break: code -> names.
    forbidden_builtins: dict[str, tuple[str, ...]]
    # Values the probe gives declared hyperparameters it has no value for; any other name gets the default.
    probe_hyperparameters: dict[str, float]
    probe_hyperparameter_default: float
    clauses: tuple[Clause, ...]

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, value: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if min(value) <= 0:
            raise ValueError(f"input_shape must be positive, got {value}")
        return value

    @model_validator(mode="after")
    def _unique_codes(self) -> Contract:
        codes = [c.code for c in self.clauses]
        duplicates = sorted({c for c in codes if codes.count(c) > 1})
        if duplicates:
            raise ValueError(f"duplicate clause codes: {duplicates}")
        return self

    def clause(self, code: str) -> Clause:
        for clause in self.clauses:
            if clause.code == code:
                return clause
        raise KeyError(f"contract {self.name} has no clause {code}")

    def violation(self, code: str, message: str, line: int | None = None) -> Violation:
        clause = self.clause(code)
        return Violation(code=code, clause=clause.rule, message=message, line=line, hint=clause.hint)

    def render(self) -> str:
        """The exact contract text given to the coder."""
        from capnas.contracts.render import render_contract

        return render_contract(self)

    @classmethod
    def from_data(cls, data: Contract | dict[str, Any]) -> Contract:
        return data if isinstance(data, Contract) else cls.model_validate(data)
