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

from capnas.agents.llm_config import AgentModels
from capnas.graph.build import build_graph
from capnas.graph.context import Context
from capnas.graph.final_test import recorded as recorded_test
from capnas.graph.final_test import score_best_on_test
from capnas.graph.journal import Journal, baseline_id
from capnas.graph.services import checkpoints_path, journal_path, services_for
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
          on_event: OnEvent | None = None, on_interrupt: OnInterrupt | None = None,
          baseline: str | None = None) -> dict[str, Any]:
    """A new run. It is in the journal before the graph takes its first step, so a crash at any point after
    this call returns leaves a run that `resume` can continue. `baseline="random"`: when the run has ended, a
    sibling run searches with `random` generation under the same budget (`with_baseline`)."""
    run_id = run_id or new_run_id()
    journal = Journal(journal_path(ctx.run_dir))
    if journal.get_run(run_id) is not None:
        raise RunError(f"run {run_id!r} already exists in {journal.path}; continue it with `capnas resume {run_id}`",
                       usage=True)
    if baseline:
        ctx = ctx.model_copy(update={"final_test": False})  # both arms are scored on test after both have ended
    journal.create_run(task, {**ctx.to_record(), "requirement": requirement, "baseline": baseline}, run_id=run_id)
    summary = drive(ctx.run_dir, run_id, ctx, _first_input(run_id, task, requirement), on_event, on_interrupt)
    return with_baseline(ctx, run_id, summary, on_event) if baseline else summary


def with_baseline(ctx: Context, run_id: str, summary: dict[str, Any], on_event: OnEvent | None = None) -> dict[str, Any]:
    """The equal-budget random arm of a finished guided run, then the test split for the best of each.

    The random arm is a sibling run in the same journal: the guided run's final task (the data, families and
    sizes the planner settled on, the same training time and epochs per candidate, the same seed) with as
    many candidates as the guided run generated. Only when both arms have ended is each arm's val-chosen best
    scored on test, once. Resumable: a crash in the random arm is continued by `capnas resume RUN_ID`."""
    if summary["status"] not in ("finished", "stopped"):
        return summary  # the guided arm did not end (failed or paused): nothing to compare yet
    journal = Journal(journal_path(ctx.run_dir))
    guided_task = journal.get_run(run_id)["task"]
    base_id = baseline_id(run_id)
    base_ctx = ctx.model_copy(update={"generation": "random", "models": None, "final_test": False,
                                      "confirm_task": False, "extra": {"baseline_of": run_id}})
    base_run = journal.get_run(base_id)
    if base_run is None:
        task = {**guided_task, "budgets": {**guided_task["budgets"], "max_candidates": max(1, summary["candidates"]),
                                            "min_candidates": 0}}
        journal.create_run(task, {**base_ctx.to_record(), "requirement": ""}, run_id=base_id)
        drive(ctx.run_dir, base_id, base_ctx, _first_input(base_id, task, ""), on_event)
    elif base_run["status"] not in ("finished", "stopped"):
        resume(ctx.run_dir, base_id, on_event=on_event)
    for arm_id, arm_ctx in ((run_id, ctx), (base_id, base_ctx)):
        score_best_on_test(services_for(arm_ctx, arm_id, journal.get_run(arm_id)["task"]))
    return {**summarize(ctx.run_dir, run_id), "baseline": summarize(ctx.run_dir, base_id)}


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
        summary = drive(workspace, run_id, ctx, first, on_event, on_interrupt)
        return with_baseline(ctx, run_id, summary, on_event) if record.get("baseline") else summary
    if snapshot.next:
        journal.set_run_status(run_id, "running")
        if journal.paused(run_id):  # whoever paused it is gone (resuming is asking to go on)
            journal.request(run_id, "resume")
        summary = drive(workspace, run_id, ctx, None, on_event, on_interrupt)
    else:
        summary = summarize(workspace, run_id)  # the graph had finished
    return with_baseline(ctx, run_id, summary, on_event) if record.get("baseline") else summary


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
        test = recorded_test(journal, run_id)
        best = {"candidate_id": top.candidate_id, "metrics": top.metrics,
                "test_metrics": test["metrics"] if test and test["candidate_id"] == top.candidate_id else None,
                "code_path": str(Path(top.artifacts) / JOB_DIR / CANDIDATE_FILE) if top.artifacts else None}
    return {
        "run_id": run_id,
        "generation": (run.get("config") or {}).get("generation"),
        "status": run.get("status", "unknown"),
        "stop_reason": run.get("stop_reason"),
        "candidates": len(cands),
        "valid": sum(1 for c in cands if c.status in ("valid", "trained", "failed")),
        "trained": sum(1 for c in cands if c.status == "trained"),
        "best": best,
        "tokens": int(sum((u["input_tokens"] or 0) + (u["output_tokens"] or 0) for u in usage.values())),
        "cost_usd": round(sum(u["cost_usd"] or 0.0 for u in usage.values()), 6),
        "wall_s": round(run["updated_at"] - run["created_at"], 1) if run else None,
    }


def compare(workspace: str | Path, run_a: str, run_b: str) -> tuple[Any, Any]:
    """Two runs of a workspace as `capnas.tools.report.compare.Arm`s (ranked by the first run's objective)."""
    from capnas.tools.report.compare import arm

    journal = Journal(journal_path(workspace))
    runs = {rid: journal.get_run(rid) for rid in (run_a, run_b)}
    if missing := [rid for rid, run in runs.items() if run is None]:
        known = ", ".join(r["run_id"] for r in journal.list_runs()[:5]) or "none"
        raise RunError(f"no run {', '.join(map(repr, missing))} in {journal.path} (recent runs: {known})", usage=True)
    objective = (runs[run_a].get("task") or {}).get("objective", "cider")
    return tuple(arm(summarize(workspace, rid), [c.to_dict() for c in journal.candidates(rid)],
                     runs[rid]["created_at"], objective) for rid in (run_a, run_b))
