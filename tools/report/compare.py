"""Two runs side by side (a guided search and its equal-budget random baseline, or any two): each arm's best
by val, its test score, what it spent, and how the best-so-far grew, from journal rows only. Every number here
was measured by the evaluator or counted in the journal; the one sentence of what it means is built from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capnas.tools.report.summary import METRIC_KEYS


@dataclass
class Arm:
    """One run of a comparison, as the journal recorded it."""

    run_id: str
    generation: str | None
    objective: str
    candidates: int
    trained: int
    best_id: str | None
    best_val: dict[str, float]
    best_test: dict[str, float] | None  # the val-chosen best on the test split, scored once after the search
    tokens: int
    cost_usd: float
    wall_s: float | None
    # (candidates trained so far, seconds since the run started, best val objective so far), in training order
    progress: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.run_id} ({self.generation or '?'})"


def arm(summary: dict[str, Any], candidates: list[dict[str, Any]], run_started_at: float, objective: str) -> Arm:
    """An Arm from `capnas.runner.summarize`'s object and the run's candidate rows (plain dicts)."""
    trained = sorted((c for c in candidates if c.get("status") == "trained" and c.get("metrics")),
                     key=lambda c: c.get("updated_at") or 0.0)
    progress, best = [], float("-inf")
    for n, c in enumerate(trained, 1):
        best = max(best, float(c["metrics"].get(objective, float("-inf"))))
        progress.append((n, round((c.get("updated_at") or run_started_at) - run_started_at, 1), best))
    top = summary.get("best") or {}
    return Arm(run_id=summary["run_id"], generation=summary.get("generation"), objective=objective,
               candidates=summary["candidates"], trained=summary["trained"], best_id=top.get("candidate_id"),
               best_val=top.get("metrics") or {}, best_test=top.get("test_metrics"), tokens=summary.get("tokens", 0),
               cost_usd=summary.get("cost_usd", 0.0), wall_s=summary.get("wall_s"), progress=progress)


def arm_from_record(record: Any) -> Arm:
    """An Arm from a report's `RunRecord` (the journal's rows of one run, read by the CLI)."""
    run, objective = record.run, (record.run.get("task") or {}).get("objective", "cider")
    by_id = {c["candidate_id"]: c for c in record.candidates}
    top = by_id.get(record.leaderboard[0]) if record.leaderboard else None
    test = record.test if record.test and top and record.test.get("candidate_id") == top["candidate_id"] else None
    usage = record.usage.values()
    summary = {
        "run_id": run["run_id"], "generation": (run.get("config") or {}).get("generation"),
        "candidates": len(record.candidates), "trained": sum(c.get("status") == "trained" for c in record.candidates),
        "best": {"candidate_id": top["candidate_id"], "metrics": top.get("metrics"),
                 "test_metrics": (test or {}).get("metrics")} if top else None,
        "tokens": int(sum((u.get("input_tokens") or 0) + (u.get("output_tokens") or 0) for u in usage)),
        "cost_usd": sum(u.get("cost_usd") or 0.0 for u in usage),
        "wall_s": round(run["updated_at"] - run["created_at"], 1) if "updated_at" in run else None,
    }
    return arm(summary, record.candidates, run.get("created_at") or 0.0, objective)


def verdict(a: Arm, b: Arm) -> str:
    """One plain sentence: which arm's best scored higher, on test when both were scored (else on val), by how
    much, and how little one pair of runs can say."""
    key = a.objective
    split, va, vb = "test", (a.best_test or {}).get(key), (b.best_test or {}).get(key)
    if va is None or vb is None:
        split, va, vb = "val", a.best_val.get(key), b.best_val.get(key)
    if va is None or vb is None:
        return f"No comparison yet: {a.label if va is None else b.label} has no trained candidate."
    name = {"cider": "CIDEr", "bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L"}.get(key, key)
    ratio = f" ({va / vb:.2f}x)" if vb > 0 else ""
    if abs(va - vb) < 1e-9:
        head = f"Both arms' best models scored {name} {va:.3f} on {split}"
    elif va > vb:
        head = f"{a.label} beat {b.label} on {split}: {name} {va:.3f} against {vb:.3f}{ratio}"
    else:
        head = (f"{a.label} did not beat {b.label} on {split}: {name} {va:.3f} against {vb:.3f}{ratio}, "
                f"so here the search did no better than chance")
    return (f"{head}, with {a.trained} and {b.trained} candidates trained. One run per arm is one draw: "
            f"benchmarks/bench_search.py repeats both over seeds.")


def comparison_table(a: Arm, b: Arm) -> list[list[str]]:
    """Rows (the first is the header) of the side-by-side table."""

    def metric(values: dict[str, float] | None, key: str) -> str:
        value = (values or {}).get(key)
        return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"

    rows = [["", a.label, b.label],
            ["candidates generated / trained", f"{a.candidates} / {a.trained}", f"{b.candidates} / {b.trained}"],
            ["best (chosen on val)", a.best_id or "none", b.best_id or "none"]]
    rows += [[f"val {k}", metric(a.best_val, k), metric(b.best_val, k)] for k in METRIC_KEYS]
    rows += [[f"test {k}", metric(a.best_test, k), metric(b.best_test, k)] for k in METRIC_KEYS]
    rows += [["LLM tokens", f"{a.tokens:,}", f"{b.tokens:,}"],
             ["LLM cost (USD)", f"{a.cost_usd:.4f}", f"{b.cost_usd:.4f}"],
             ["wall time (s)", f"{a.wall_s:.0f}" if a.wall_s else "n/a", f"{b.wall_s:.0f}" if b.wall_s else "n/a"]]
    return rows


def as_json(a: Arm, b: Arm) -> dict[str, Any]:
    def one(x: Arm) -> dict[str, Any]:
        return {"run_id": x.run_id, "generation": x.generation, "candidates": x.candidates, "trained": x.trained,
                "best": x.best_id, "val": x.best_val, "test": x.best_test, "tokens": x.tokens,
                "cost_usd": x.cost_usd, "wall_s": x.wall_s,
                "progress": [{"trained": n, "elapsed_s": t, "best_val": v} for n, t, v in x.progress]}

    return {"objective": a.objective, "a": one(a), "b": one(b), "verdict": verdict(a, b)}
