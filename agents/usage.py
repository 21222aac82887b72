"""Token and cost accounting per agent role, with a budget that stops the run before it overspends.

`UsageLedger.callback(role, ...)` gives a LangChain callback that `build_chat_model` attaches to each
role's model: before every call it checks the budget (raising `BudgetExceeded`), after every call it
records the reply's `usage_metadata`. Every call through the model is counted, re-asks included.
"""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel, ConfigDict, Field


class RoleUsage(BaseModel):
    """What one role (or the whole run) has spent."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: RoleUsage) -> RoleUsage:
        return RoleUsage(
            calls=self.calls + other.calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )


class Budget(BaseModel):
    """Limits on the whole run's LLM spending; None means no limit. Cost only counts for models
    with prices in their `LLMConfig`, so a USD limit does not bind unpriced (local) models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_total_tokens: int | None = Field(default=None, gt=0)
    max_cost_usd: float | None = Field(default=None, gt=0)


class BudgetExceeded(RuntimeError):
    """Raised before an LLM call when the run has already spent its budget."""

    def __init__(self, role: str, spent: RoleUsage, budget: Budget) -> None:
        limits = []
        if budget.max_total_tokens is not None:
            limits.append(f"{spent.total_tokens}/{budget.max_total_tokens} tokens")
        if budget.max_cost_usd is not None:
            limits.append(f"${spent.cost_usd:.4f}/${budget.max_cost_usd:.4f}")
        super().__init__(
            f"LLM budget exhausted before a {role} call: spent {', '.join(limits)} "
            f"over {spent.calls} calls; stopping with the results so far"
        )
        self.role = role
        self.spent = spent
        self.budget = budget


def cost_usd(usage: UsageMetadata, price_in: float | None, price_out: float | None) -> float:
    """USD for one call at prices per million tokens; an unknown price counts as free."""
    return (usage["input_tokens"] * (price_in or 0.0) + usage["output_tokens"] * (price_out or 0.0)) / 1e6


class UsageLedger:
    """Per-role usage totals, safe to share between concurrent calls."""

    def __init__(self, budget: Budget | None = None, spent: dict[str, RoleUsage] | None = None) -> None:
        self.budget = budget or Budget()
        self._by_role: dict[str, RoleUsage] = {k: v.model_copy() for k, v in (spent or {}).items()}
        self._lock = threading.Lock()

    def record(self, role: str, usage: UsageMetadata | None, cost: float = 0.0) -> None:
        """Count one call; a reply without usage data still counts as a call."""
        add = RoleUsage(calls=1, cost_usd=cost)
        if usage:
            add.input_tokens, add.output_tokens = usage["input_tokens"], usage["output_tokens"]
        with self._lock:
            self._by_role[role] = self._by_role.get(role, RoleUsage()) + add

    def total(self) -> RoleUsage:
        with self._lock:
            return sum(self._by_role.values(), RoleUsage())

    def by_role(self) -> dict[str, RoleUsage]:
        """A copy of the per-role totals (also what to store to resume a run with its spending)."""
        with self._lock:
            return {k: v.model_copy() for k, v in self._by_role.items()}

    def exhausted(self) -> bool:
        spent, budget = self.total(), self.budget
        return (budget.max_total_tokens is not None and spent.total_tokens >= budget.max_total_tokens) or (
            budget.max_cost_usd is not None and spent.cost_usd >= budget.max_cost_usd
        )

    def check(self, role: str) -> None:
        """Raise BudgetExceeded if a call for `role` would start with the budget already spent."""
        if self.exhausted():
            raise BudgetExceeded(role, self.total(), self.budget)

    def callback(
        self, role: str, price_in_per_mtok: float | None = None, price_out_per_mtok: float | None = None
    ) -> LedgerCallback:
        return LedgerCallback(self, role, price_in_per_mtok, price_out_per_mtok)


class LedgerCallback(BaseCallbackHandler):
    """Checks the budget when a chat model starts and records its usage when it ends."""

    raise_error = True  # let BudgetExceeded escape instead of being logged and ignored
    run_inline = True  # run in the caller's thread, also for async calls

    def __init__(
        self,
        ledger: UsageLedger,
        role: str,
        price_in_per_mtok: float | None = None,
        price_out_per_mtok: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.role = role
        self.prices = (price_in_per_mtok, price_out_per_mtok)

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.ledger.check(self.role)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        for generations in response.generations:
            for generation in generations:
                if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
                    usage = generation.message.usage_metadata
                    cost = cost_usd(usage, *self.prices) if usage else 0.0
                    self.ledger.record(self.role, usage, cost)
