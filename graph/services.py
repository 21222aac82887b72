"""Long-lived helpers the nodes share within one process: the journal, the LLM models and usage ledger,
the prepared dataset, the contract and the caption evaluator (one METEOR process for the whole run).

None of this is graph state: it is rebuilt from the Context and the journal after a crash."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from langgraph.config import get_stream_writer

from capnas.agents.llm import build_role_models
from capnas.agents.usage import Budget, RoleUsage, UsageLedger
from capnas.contracts.caption_net_v1 import caption_net_v1
from capnas.contracts.contract import Contract
from capnas.graph.context import Context
from capnas.graph.journal import Journal
from capnas.tools.data.caption_dataset import CaptionDataset
from capnas.tools.data.datasets import task_data
from capnas.tools.jobs.executors import JobRunner, runner_for
from capnas.tools.data.prepare import PreparedDataset
from capnas.tools.jobs.slots import Slots, job_threads
from capnas.tools.task import Task


def journal_path(workspace: str | Path) -> Path:
    return Path(workspace) / "journal.sqlite"


def checkpoints_path(workspace: str | Path) -> Path:
    return Path(workspace) / "checkpoints.sqlite"


@dataclass
class RunServices:
    ctx: Context
    run_id: str
    task: Task
    journal: Journal
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def ledger(self) -> UsageLedger:
        """Spending so far comes from the journal, so a resumed run keeps counting where it stopped."""
        budget = Budget(max_total_tokens=self.task.budgets.max_tokens, max_cost_usd=self.task.budgets.max_cost_usd)
        spent = {role: RoleUsage(calls=u["calls"], input_tokens=u["input_tokens"] or 0,
                                 output_tokens=u["output_tokens"] or 0, cost_usd=u["cost_usd"] or 0.0)
                 for role, u in self.journal.usage(self.run_id).items()}
        return UsageLedger(budget, spent=spent)

    @cached_property
    def models(self) -> dict[str, Any] | None:
        if self.ctx.models is None:
            return None
        return build_role_models(self.ctx.models, self.ledger, seed=self.ctx.seed)

    @cached_property
    def _data(self) -> tuple[CaptionDataset, PreparedDataset]:
        return task_data(self.task, on_progress=_stream_writer())

    @property
    def dataset(self) -> CaptionDataset:
        return self._data[0]

    @property
    def prepared(self) -> PreparedDataset:
        return self._data[1]

    @cached_property
    def contract(self) -> Contract:
        return caption_net_v1(len(self.prepared.vocab), self.task.image_size, self.task.max_len,
                              max_params=self.task.max_params, max_latency_ms=self.task.max_latency_ms)

    @cached_property
    def evaluator(self):
        from capnas.tools.scoring.metrics import CaptionEvaluator  # starts Java lazily, only when scoring is needed

        return CaptionEvaluator(spice=False)

    @cached_property
    def slots(self) -> Slots:
        """The machine's CPU and GPU slots, shared by the branches of a round (one admission queue per run)."""
        return Slots.for_machine(self.ctx.device)

    @cached_property
    def runner(self) -> JobRunner:
        return runner_for(self.ctx.executor, self.ctx.ray_address, self.ctx.concurrency)

    @property
    def threads(self) -> int | None:
        """torch threads per job: the Context's, else the cores shared evenly by the jobs of a round."""
        return job_threads(self.ctx.threads, self.ctx.concurrency)

    @property
    def scratch_dir(self) -> Path:
        """Probe scratch inside the workspace (Ray workers on other nodes see the workspace, not this /tmp)."""
        path = Path(self.ctx.run_dir) / "scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def artifacts_dir(self, candidate_id: str) -> Path:
        path = Path(self.ctx.run_dir) / "runs" / self.run_id / candidate_id
        path.mkdir(parents=True, exist_ok=True)
        return path


def _stream_writer() -> Callable[[dict[str, Any]], None] | None:
    """The running node's custom-event writer, so a build's progress reaches `capnas run` and `capnas chat` as
    the run's other events do; None outside a node (a report, a benchmark)."""
    try:
        return get_stream_writer()
    except RuntimeError:
        return None


_CACHE: dict[tuple[str, str, str], RunServices] = {}
_CACHE_LOCK = threading.Lock()


def services_for(ctx: Context, run_id: str, task: dict[str, Any]) -> RunServices:
    """One RunServices per (workspace, run, task) in this process."""
    key = (str(Path(ctx.run_dir).resolve()), run_id, Task(**task).model_dump_json())
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = RunServices(ctx=ctx, run_id=run_id, task=Task(**task), journal=Journal(journal_path(ctx.run_dir)))
        return _CACHE[key]
