"""Start, resume and summarize runs: the one place the CLI, the chat console and the Python API drive the
graph. The graph runs with a SqliteSaver beside the journal; `thread_id` is the run id."""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from capnas.agents.llm import AgentModels
from capnas.graph.build import build_graph
from capnas.graph.context import Context
from capnas.graph.journal import Journal
from capnas.graph.services import checkpoints_path, journal_path
from capnas.sandbox.job import CANDIDATE_FILE
from capnas.tools.jobs.training import JOB_DIR

log = logging.getLogger(__name__)

OnEvent = Callable[[dict[str, Any]], None]
# An answer to an interrupt (e.g. the task confirmation); None ends the stream at the interrupt.
OnInterrupt = Callable[[dict[str, Any]], Any]


class RunError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do. `usage`: the request was
    wrong (unknown run, taken id), as opposed to a run that failed on the way."""

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


@contextmanager
def run_models(models: AgentModels | None, generation: str, embedded_model: str | None,
               progress: Callable[[str], None] | None = None) -> Iterator[tuple[AgentModels | None, str]]:
    """The run's LLMs and a line saying which: the configured endpoint; else, unless the run needs no LLM
    (`random`), the embedded local model, served for as long as the block lasts (raises EmbeddedLLMError
    when it cannot start)."""
    if models is not None:
        yield models, f"{models.default.model} at {models.default.base_url or 'api.openai.com'}"
    elif generation == "random" or embedded_model is None:
        yield None, "none (random generation needs no LLM)"
    else:
        from capnas.embedded import embedded_models

        with embedded_models(embedded_model, progress=progress) as (local, line):
            yield local, line


def run_exists(workspace: str | Path, run_id: str) -> bool:
    """Whether the workspace's journal holds `run_id` (without creating a journal where there is none)."""
    path = journal_path(workspace)
    return path.is_file() and Journal(path).get_run(run_id) is not None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4]


@contextmanager
def compiled_graph(workspace: str | Path) -> Iterator[Any]:
    Path(workspace).mkdir(parents=True, exist_ok=True)
    with SqliteSaver.from_conn_string(str(checkpoints_path(workspace))) as saver:
        yield build_graph(checkpointer=saver)


def drive(workspace: str | Path, run_id: str, ctx: Context, first_input: Any,
          on_event: OnEvent | None = None, on_interrupt: OnInterrupt | None = None) -> dict[str, Any]:
    """Stream the graph until it ends (or stops at an interrupt nobody answers); returns the summary."""
    config = {"configurable": {"thread_id": run_id}, "recursion_limit": 100_000}
    payload = first_input
    try:
        with compiled_graph(workspace) as graph:
            while True:
                pending = None
                # durability="sync": each step's checkpoint is on disk before the next step starts, so a crash
                # loses at most the step in flight (whose spending nodes are idempotent).
                # subgraphs=True: the candidate branches' events (coder, validator, trainer) stream too.
                for _ns, mode, chunk in graph.stream(payload, config, context=ctx, stream_mode=["updates", "custom"],
                                                     durability="sync", subgraphs=True):
                    if mode == "custom" and on_event:
                        on_event(chunk)
                    elif mode == "updates" and "__interrupt__" in chunk:
                        pending = chunk["__interrupt__"][0].value
                if pending is None or on_interrupt is None:
                    break
                answer = on_interrupt(pending)
                if answer is None:
                    break
                # LangGraph reads an empty dict as "resume no interrupt by id": it would ask again, forever.
                payload = Command(resume=answer if answer != {} else {"accepted": True})
    except KeyboardInterrupt:
        Journal(journal_path(workspace)).set_run_status(run_id, "interrupted", "interrupted")
        raise
    except Exception as err:  # a node failed: keep everything done so far, say how to continue
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:500] if str(err) else ''}"
        Journal(journal_path(workspace)).set_run_status(run_id, "failed", reason)
        log.exception("run %s failed", run_id)
        raise RunError(f"run {run_id} failed: {reason}\nEverything finished so far is kept in {workspace}; "
                       f"fix the cause and continue with `capnas resume {run_id} --run-dir {workspace}`") from err
    return summarize(workspace, run_id)


def start(ctx: Context, task: dict[str, Any], requirement: str = "", run_id: str | None = None,
          on_event: OnEvent | None = None, on_interrupt: OnInterrupt | None = None) -> dict[str, Any]:
    """A new run. It is in the journal before the graph takes its first step, so a crash at any point after
    this call returns leaves a run that `resume` can continue."""
    run_id = run_id or new_run_id()
    journal = Journal(journal_path(ctx.run_dir))
    if journal.get_run(run_id) is not None:
        raise RunError(f"run {run_id!r} already exists in {journal.path}; continue it with `capnas resume {run_id}`",
                       usage=True)
    journal.create_run(task, {**ctx.to_record(), "requirement": requirement}, run_id=run_id)
    return drive(ctx.run_dir, run_id, ctx, _first_input(run_id, task, requirement), on_event, on_interrupt)


def _first_input(run_id: str, task: dict[str, Any], requirement: str) -> dict[str, Any]:
    return {"run_id": run_id, "task": task, "requirement": requirement}


def resume(workspace: str | Path, run_id: str, models: AgentModels | None = None,
           on_event: OnEvent | None = None, on_interrupt: OnInterrupt | None = None) -> dict[str, Any]:
    """Continue a run after a crash (or a stop at an interrupt). Settings come from the journal; keys come
    from the environment variables the run was configured with, never from the journal."""
    journal = Journal(journal_path(workspace))
    run = journal.get_run(run_id)
    if run is None:
        known = ", ".join(r["run_id"] for r in journal.list_runs()[:5]) or "none"
        raise RunError(f"no run {run_id!r} in {journal.path} (recent runs: {known})", usage=True)
    record = run["config"]
    if models is None and record.get("models") and not record.get("extra", {}).get("embedded_model"):
        models = AgentModels(**record["models"])
    ctx = Context.from_record({**record, "run_dir": str(workspace)}, models)
    with compiled_graph(workspace) as graph:
        snapshot = graph.get_state({"configurable": {"thread_id": run_id}})
    if not snapshot.values:  # the crash came before the graph's first checkpoint: start it over
        first = _first_input(run_id, run["task"], record.get("requirement", ""))
        return drive(workspace, run_id, ctx, first, on_event, on_interrupt)
    if not snapshot.next:
        return summarize(workspace, run_id)  # already finished
    journal.set_run_status(run_id, "running")
    if journal.paused(run_id):  # whoever paused it is gone (resuming is asking to go on)
        journal.request(run_id, "resume")
    return drive(workspace, run_id, ctx, None, on_event, on_interrupt)


def recorded_context(workspace: str | Path, run_id: str) -> Context:
    """The settings a run was started with (no models: keys are never stored)."""
    run = Journal(journal_path(workspace)).get_run(run_id)
    if run is None:
        raise RunError(f"no run {run_id!r} in {journal_path(workspace)} (see `capnas runs`)", usage=True)
    return Context.from_record({**run["config"], "run_dir": str(workspace)}, None)


def summarize(workspace: str | Path, run_id: str) -> dict[str, Any]:
    """The `capnas run --json` object, from the journal only."""
    journal = Journal(journal_path(workspace))
    run = journal.get_run(run_id) or {}
    cands = journal.candidates(run_id)
    objective = (run.get("task") or {}).get("objective", "cider")
    board = journal.leaderboard(run_id, objective)
    usage = journal.usage(run_id)
    best = None
    if board:
        top = board[0]
        best = {"candidate_id": top.candidate_id, "metrics": top.metrics,
                "code_path": str(Path(top.artifacts) / JOB_DIR / CANDIDATE_FILE) if top.artifacts else None}
    return {
        "run_id": run_id,
        "status": run.get("status", "unknown"),
        "stop_reason": run.get("stop_reason"),
        "candidates": len(cands),
        "valid": sum(1 for c in cands if c.status in ("valid", "trained", "failed")),
        "trained": sum(1 for c in cands if c.status == "trained"),
        "best": best,
        "tokens": int(sum((u["input_tokens"] or 0) + (u["output_tokens"] or 0) for u in usage.values())),
        "cost_usd": round(sum(u["cost_usd"] or 0.0 for u in usage.values()), 6),
    }
