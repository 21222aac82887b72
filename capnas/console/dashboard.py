"""What the live view shows: the round, each candidate with its status (a progress bar while it trains), the
leaderboard, tokens and cost. Built from the run's custom events (fast, in memory) and a journal snapshot the
session refreshes about once a second (the numbers of record)."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from capnas.tools.data.progress import EVENT as PROGRESS, progress_line

STATUS_STYLE = {"generating": "yellow", "generated": "yellow", "validating": "yellow", "valid": "cyan",
                "training": "blue", "trained": "green", "invalid": "red", "failed": "red", "duplicate": "magenta"}
FINAL = ("trained", "failed", "invalid", "duplicate")
SHOWN = 6  # candidates in the live view (the latest ones)


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


class RunView:
    """Thread-safe: events arrive on the run's thread, rendering happens on the live view's."""

    def __init__(self, run_id: str, task: dict[str, Any] | None = None) -> None:
        self.run_id = run_id
        self.task = task or {}
        self.phase = "planning"
        self.round: int | None = None
        self.candidates: dict[str, dict[str, Any]] = {}
        self.feedback = ""
        self.done: dict[str, Any] | None = None
        self.summary: dict[str, Any] = {}
        self.board: list[dict[str, Any]] = []
        self.progress: str | None = None  # a long data step in progress (decoding, tokenizing, extracting)
        self._lock = threading.Lock()

    # -- updates ------------------------------------------------------------------------------------------
    def on_event(self, e: dict[str, Any]) -> None:
        with self._lock:
            kind = e.get("event")
            if kind == "task":
                self.task = e["task"]
                self.phase = "running"
            elif kind == "round":
                self.round = e["round"]
            elif kind == "candidate":
                cand = self.candidates.setdefault(e["candidate_id"], {"train": {}})
                cand.update({k: v for k, v in e.items() if k not in ("event", "candidate_id") and v is not None})
            elif kind == "train":
                train = self.candidates.setdefault(e["candidate_id"], {"status": "training", "train": {}})["train"]
                # the epoch in progress comes from step events; epoch and val events (scored later) carry results
                keys = ("epoch", "epochs", "step", "steps") if e.get("phase") in ("start", "step") else ("loss", "cider")
                train.update({k: e[k] for k in keys if e.get(k) is not None})
            elif kind == "critic":
                self.feedback = e.get("feedback") or ""
            elif kind == PROGRESS:
                self.progress = progress_line(e) if e.get("done", 0) < e.get("total", 0) else None
            elif kind == "done":
                self.done = e
                self.phase = e.get("status", "finished")

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase = phase

    def refresh(self, summary: dict[str, Any], board: list[dict[str, Any]]) -> None:
        with self._lock:
            self.summary, self.board = summary, board

    # -- rendering ----------------------------------------------------------------------------------------
    def short(self, candidate_id: str) -> str:
        return candidate_id.removeprefix(self.run_id + "-")

    def header(self) -> Text:
        budgets = self.task.get("budgets", {})
        s = self.summary
        parts = [f"run {self.run_id}", self.phase]
        if self.round is not None:
            parts.append(f"round {self.round + 1}")
        parts.append(f"{s.get('trained', 0)} trained of {s.get('candidates', len(self.candidates))}"
                     f"/{budgets.get('max_candidates', '?')}")
        parts.append(f"tokens {s.get('tokens', 0):,}")
        parts.append(f"${s.get('cost_usd', 0.0):.4f}")
        return Text(" · ".join(parts), style="bold")

    def render(self) -> RenderableType:
        with self._lock:
            parts: list[RenderableType] = [self.header()]
            if self.progress:
                parts.append(Text(self.progress, style="dim"))
            if self.candidates:
                parts.append(self._candidates_table())
            if self.board:
                parts.append(self._board_table())
            if self.feedback:
                parts.append(Text(f"critic: {self.feedback}", style="dim", overflow="ellipsis", no_wrap=True))
            return Group(*parts)

    def _candidates_table(self) -> Table:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("candidate", no_wrap=True)
        table.add_column("status", no_wrap=True, min_width=10)
        table.add_column("progress", no_wrap=True, overflow="ellipsis")
        table.add_column("params", no_wrap=True, justify="right", min_width=9)
        table.add_column(self.task.get("objective", "cider"), no_wrap=True, min_width=5)
        table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=60)
        objective = self.task.get("objective", "cider")
        for cid, c in list(self.candidates.items())[-SHOWN:]:
            status = c.get("status", "?")
            metrics = c.get("metrics") or {}
            table.add_row(self.short(cid), Text(status, style=STATUS_STYLE.get(status, "")), self._progress(c),
                          f"{c['params']:,}" if c.get("params") else "-", _num(metrics.get(objective)),
                          Text(c.get("plan") or ""))
        return table

    def _progress(self, c: dict[str, Any]) -> RenderableType:
        train = c.get("train") or {}
        if c.get("status") != "training" or not train:
            return Text(", ".join(c.get("violations") or []) or "", style="red")
        steps, step = train.get("steps"), train.get("step")
        epochs = train.get("epochs") or self.task.get("budgets", {}).get("epochs")
        label = f" epoch {train.get('epoch', '?')}/{epochs or '?'}"
        if train.get("loss") is not None:
            label += f" loss {_num(train['loss'], 2)}"
        if not steps:
            return Text(label.strip())
        line = Table.grid(padding=(0, 1))
        line.add_row(ProgressBar(total=steps, completed=min(step or 0, steps), width=20), Text(label.strip()))
        return line

    def _board_table(self) -> Table:
        objective = self.task.get("objective", "cider")
        table = Table(title="leaderboard", title_justify="left", box=None, header_style="bold", pad_edge=False)
        for col in ("#", "candidate", objective, "bleu_4"):
            table.add_column(col, no_wrap=True)
        table.add_column("params", no_wrap=True, justify="right", min_width=9)
        table.add_column("model", no_wrap=True, overflow="ellipsis", max_width=60)
        for i, r in enumerate(self.board[:3], 1):
            table.add_row(str(i), self.short(r["candidate_id"]), _num(r.get(objective)), _num(r.get("bleu_4")),
                          f"{r['params'] or 0:,}", Text(r.get("plan") or ""))
        return table


def event_line(e: dict[str, Any], view: RunView, verbose: bool) -> str | None:
    """A transcript line for an event: the milestones always, every status and epoch when `verbose` (no live
    view to show them). Rich markup."""
    kind = e.get("event")
    if kind == "round":
        plan = e.get("plan") or {}
        return f"[bold]round {e['round'] + 1}[/bold]: {', '.join(plan.get('encoders', [])[:2])} × " \
               f"{', '.join(plan.get('decoders', [])[:2])}"
    if kind == "candidate" and (verbose or e.get("status") in FINAL):
        line = f"  candidate {view.short(e['candidate_id'])}: {e['status']}"
        if e.get("violations"):
            line += " violations: " + escape(", ".join(e["violations"][:5]))
        if e.get("metrics"):
            line += " " + " ".join(f"{k}={v:.3f}" for k, v in e["metrics"].items() if isinstance(v, float))
        if e.get("plan") and verbose:
            line += f" [dim]{escape(e['plan'])}[/dim]"
        return line
    if kind == "train" and verbose and e.get("phase") == "epoch":
        return f"    epoch {e.get('epoch')}: loss={_num(e.get('loss'))}"
    if kind == "train" and verbose and e.get("phase") == "val":
        return f"    epoch {e.get('epoch')}: val cider={_num(e.get('cider'))}"
    if kind == PROGRESS and (verbose or e.get("done", 0) >= e.get("total", 0)):  # the live view shows the rest
        return f"  [dim]{escape(progress_line(e))}[/dim]"
    if kind == "features":
        return f"  frozen-encoder tokens {escape(str(e.get('key')))} stored for every later job ({_num(e.get('seconds'), 1)} s)"
    if kind == "critic" and e.get("feedback"):
        return f"  critic ({e['decision']}): {escape(e['feedback'])}"
    if kind == "test" and e.get("metrics"):
        return f"  best {view.short(e['candidate_id'])} on the test split (once, after the search): " + " ".join(
            f"{k}={v:.3f}" for k, v in e["metrics"].items() if isinstance(v, float))
    return None
