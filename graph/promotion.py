"""Promotion through a rung schedule (successive halving, asynchronous as in ASHA): every candidate trains the
first rung (`Budgets.rungs[0]` epochs); after each round the best `promote` fraction of the candidates that
reached a rung, by val objective at that rung, train on from their checkpoint to the next rung, while the run's
time lasts. A promotion never repeats an epoch (the job continues from its checkpoint: weights, optimizer,
scheduler, RNG, epoch counter) and is idempotent on resume: the journal holds each candidate's rung and its
scores at every rung, so a resumed promoter makes the same choices, and a job killed mid-rung resumes."""

from __future__ import annotations

import contextvars
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langgraph.runtime import Runtime

from capnas.graph.context import Context
from capnas.graph.journal import Candidate, fidelity_record
from capnas.graph.nodes import _budgets, _emit, _svc, train_job
from capnas.graph.state import RunState
from capnas.tools.jobs.slots import job_threads


def promotions(cands: list[Candidate], rungs: list[int], promote: float, objective: str) -> list[tuple[str, int]]:
    """(candidate id, next rung) for each candidate due for promotion now: at rung k, of the n candidates that
    reached it, the floor(n * promote) best by their objective AT rung k (later rungs do not change that
    ranking, so the choice is the same however far the promotions went before a crash) go on to rung k+1 if
    they stand at rung k and ran all its epochs (one that stopped early, or failed, stays)."""
    due: list[tuple[str, int]] = []
    for k in range(len(rungs) - 1):
        reached = [(c, _score(c, k, objective)) for c in cands if c.fidelity and c.fidelity["rung"] >= k]
        ranked = sorted(reached, key=lambda cs: (-cs[1], cs[0].candidate_id))
        for c, _ in ranked[:math.floor(len(reached) * promote)]:
            if c.fidelity["rung"] == k and c.exit_reason == "epochs" and c.status == "trained":
                due.append((c.candidate_id, k + 1))
    return due


def _score(cand: Candidate, rung: int, objective: str) -> float:
    scores = next(s["metrics"] for s in cand.fidelity["scores"] if s["rung"] == rung)  # type: ignore[index]
    return float((scores or {}).get(objective, -math.inf))


def promoter_node(state: RunState, runtime: Runtime[Context]) -> dict[str, Any]:
    """After a round's candidates: promote whoever is due, at once up to the run's concurrency, and again until
    no one is (a promotion can make another rung's population large enough), within the run's time budget."""
    svc = _svc(state, runtime)
    budgets = _budgets(svc)
    if not budgets.rungs:
        return {}
    while time.time() - state["started_at"] < budgets.time_budget * 60 and not svc.journal.stop_requested(svc.run_id):
        due = promotions(svc.journal.candidates(svc.run_id), budgets.rungs, budgets.promote, svc.task.objective)
        if not due:
            break
        # Fewer promotions than the run's concurrency share its cores (unless the run fixed `threads`): a lone
        # promotion on a CPU would otherwise leave the cores of the jobs that are not there idle.
        ctx = runtime.context
        threads = job_threads(ctx.threads, min(len(due), ctx.concurrency))
        # Each in a copy of this node's context: LangGraph's stream writer finds its run through context variables.
        with ThreadPoolExecutor(max_workers=ctx.concurrency, thread_name_prefix="capnas-promote") as pool:
            jobs = [pool.submit(contextvars.copy_context().run, _promote, svc, runtime, state, cid, rung, threads)
                    for cid, rung in due]
            for job in jobs:
                job.result()
    return {}


def _promote(svc, runtime: Runtime[Context], state: RunState, cid: str, rung: int, threads: int | None) -> None:
    """Train one candidate on to `rung` and record what it reached. One that ends by anything but its epochs (an
    early stop, the time budget, a failure in the harness) keeps its best epoch's scores and goes no further."""
    from capnas.tools.jobs.training import INHERIT_FILE, reopen

    budgets = _budgets(svc)
    cand = svc.journal.get_candidate(cid)
    epochs = budgets.rungs[rung]
    assert cand.artifacts and cand.fidelity and cand.curve is not None
    reopen(cand.artifacts, epochs)
    _emit(runtime, "promote", candidate_id=cid, rung=rung, epochs=epochs)
    inherited = svc.artifacts_dir(cid) / INHERIT_FILE  # the job's spec records whether it inherited
    outcome = train_job(svc, runtime, cand, state["started_at"], epochs=epochs,
                        inherit=inherited if inherited.exists() else None, threads=threads,
                        spent_s=sum(p["train_s"] + p.get("gen_s", 0.0) for p in cand.curve))
    if outcome.finished and outcome.best_epoch is not None:  # its stored result names the best epoch's weights
        scores = cand.fidelity["scores"] + [{"rung": rung, "epochs": epochs, "metrics": outcome.metrics}]
        status = "trained"
        svc.journal.update_candidate(
            cid, exit_reason=outcome.exit_reason, curve=[p.model_dump(mode="json") for p in outcome.curve],
            metrics=outcome.metrics or None, samples=[s.model_dump(mode="json") for s in outcome.samples],
            fidelity=fidelity_record(budgets.rungs, rung, scores, outcome.exit_reason))
    else:  # killed from outside while the run lives: one failed candidate, as in the trainer
        status = "failed"
        svc.journal.update_candidate(cid, status=status, exit_reason=outcome.exit_reason)
        svc.journal.log_event(svc.run_id, "train_error", {"exit_reason": outcome.exit_reason,
                                                          "error": outcome.error or "killed from outside"}, cid)
    svc.journal.log_event(svc.run_id, "promoted", {"rung": rung, "epochs": epochs, "exit_reason": outcome.exit_reason,
                                                   "epochs_trained": [p.epoch for p in outcome.curve]}, cid)
    _emit(runtime, "candidate", candidate_id=cid, status=status, metrics=outcome.metrics, rung=rung,
          exit_reason=outcome.exit_reason)
