"""The test split, scored once per final model: the run's best candidate, chosen on val only, after its
search has ended. Nothing before this reads the test split (selection, the critic and the planner see val).

The reporter node calls it at the end of a run; a run with a random baseline defers it until both arms have
ended (`capnas.runner.start`), so neither arm's search can be shaped by a test number."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capnas.graph.journal import TEST_SCORED, Journal
from capnas.graph.services import RunServices
from capnas.tools.jobs.training import RESULT_FILE, TrainResult, score_test

EVENT = TEST_SCORED


def recorded(journal: Journal, run_id: str) -> dict[str, Any] | None:
    """The run's test score (`{candidate_id, metrics, n_images}`), if it was scored."""
    events = journal.events(run_id, EVENT)
    return events[-1]["payload"] if events else None


def score_best_on_test(svc: RunServices) -> dict[str, Any] | None:
    """Score the run's val-chosen best model on the test split, once (a second call returns the first score).
    None when no candidate was trained. A failure is journalled (`test_failed`) and never fails the run."""
    if (done := recorded(svc.journal, svc.run_id)) is not None:
        return done
    board = svc.journal.leaderboard(svc.run_id, svc.task.objective)
    if not board or not board[0].artifacts:
        return None
    best = board[0]
    result = TrainResult.model_validate_json((Path(best.artifacts) / RESULT_FILE).read_text())
    try:
        with svc.slots.job(svc.ctx.device, svc.threads) as device:
            scored = score_test(result, svc.prepared, svc.dataset, device=device, evaluator=svc.evaluator,
                                threads=svc.threads)
    except (RuntimeError, ValueError) as err:
        svc.journal.log_event(svc.run_id, "test_failed", {"candidate_id": best.candidate_id, "error": str(err)[-2000:]},
                              best.candidate_id)
        return None
    payload = {"candidate_id": best.candidate_id, "metrics": scored.metrics, "n_images": scored.n_images,
               "best_epoch": scored.best_epoch}
    svc.journal.log_event(svc.run_id, EVENT, payload, best.candidate_id)
    return payload
