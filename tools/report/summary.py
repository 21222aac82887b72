"""The run summary the graph's reporter node writes at the end of every run: leaderboard.md and summary.json.
Cheap (no torch): it is handed the journal object and only calls it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

METRIC_KEYS = ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider")


class JournalLike(Protocol):
    def candidates(self, run_id: str) -> list[Any]: ...
    def leaderboard(self, run_id: str | None = None, metric: str = "cider") -> list[Any]: ...
    def get_run(self, run_id: str) -> dict[str, Any] | None: ...
    def usage(self, run_id: str) -> dict[str, dict[str, float]]: ...


def is_partial(cand: Any) -> bool:
    """Its scores are from a rung below the schedule's last (a first look the search did not promote)."""
    return bool((getattr(cand, "fidelity", None) or {}).get("partial"))


def fidelity_text(cand: Any) -> str:
    """'rung 1 of 3 (3 epochs), partial' for a candidate of a rung schedule; '' without one."""
    f = getattr(cand, "fidelity", None)
    if not f:
        return ""
    epochs = f["rungs"][f["rung"]]
    return f"rung {f['rung'] + 1} of {len(f['rungs'])} ({epochs} epochs)" + (", partial" if f.get("partial") else "")


def inherited_text(cand: Any) -> str:
    """'inherited 12/14 tensors, 40,100/52,000 parameters from <parent>'; '' for a fresh init."""
    i = getattr(cand, "inherited", None)
    if not i:
        return ""
    return (f"inherited {i['tensors']}/{i['of_tensors']} tensors, {i['params']:,}/{i['of_params']:,} parameters "
            f"from {i.get('from') or 'its parent'}")


def leaderboard_rows(journal: JournalLike, run_id: str | None, objective: str) -> list[dict[str, Any]]:
    rows = []
    for c in journal.leaderboard(run_id, objective):
        metrics = c.metrics or {}
        rows.append({"run_id": c.run_id, "candidate_id": c.candidate_id, "mode": c.mode, "plan": c.plan,
                     "params": c.params, **{k: metrics.get(k) for k in METRIC_KEYS},
                     "epochs": len(c.curve or []), "partial": is_partial(c), "fidelity": fidelity_text(c)})
    return rows


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| rank | candidate | mode | model | params | " + " | ".join(METRIC_KEYS) + " | epochs |"
    sep = "|" + "---|" * (6 + len(METRIC_KEYS))
    body = [
        f"| {i} | {r['candidate_id']} | {r['mode']} | {r['plan'] or ''} | {r['params'] or 0:,} | "
        + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], (int, float)) else "n/a" for k in METRIC_KEYS)
        + f" | {r.get('epochs', '')}{' (partial)' if r.get('partial') else ''} |"
        for i, r in enumerate(rows, 1)
    ]
    note = ["", "(partial): scores after a rung below the schedule's last; the search did not promote it further."]
    return "\n".join([head, sep, *body, *(note if any(r.get("partial") for r in rows) else [])])


def write_run_summary(journal: JournalLike, run_id: str, objective: str, run_dir: Path) -> dict[str, Any]:
    """leaderboard.md and summary.json in the run directory."""
    cands = journal.candidates(run_id)
    rows = leaderboard_rows(journal, run_id, objective)
    counts: dict[str, int] = {}
    for c in cands:
        counts[c.status] = counts.get(c.status, 0) + 1
    summary = {
        "run_id": run_id, "objective": objective, "candidates": len(cands), "by_status": counts,
        "best": rows[0] if rows else None, "usage": journal.usage(run_id),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "leaderboard.md").write_text(f"# Leaderboard of run {run_id}\n\n" + leaderboard_markdown(rows) + "\n")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
