"""Progress of the long data steps a person waits for (decoding, tokenizing, token extraction) as small events.

A step reports `{"event": "progress", "step", "split", "done", "total", "rate", "eta_s"}` to an `on_progress`
callback at most every few seconds, and once at its end. `capnas run` prints each as a line, `capnas chat` shows
the latest in its header, benchmarks print them to stderr; all through `progress_line`, so they read the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

OnProgress = Callable[[dict[str, Any]], None]
EVENT = "progress"
EVERY_S = 5.0  # between two reports of one step: a line every 5 s reads as alive without flooding a log
STEPS = {"decode": "decoding {split} images", "tokenize": "tokenizing {split} captions",
         "extract": "extracting frozen-encoder tokens of {split} images"}


class StepProgress:
    """Counts one step's items and reports them. The rate counts only this call's items, so a resumed build
    (which starts at `done` > 0) says how fast it goes now, and the time left follows from it."""

    def __init__(self, step: str, total: int, on_progress: OnProgress | None, split: str | None = None,
                 every_s: float = EVERY_S):
        self.step, self.total, self.split, self.on_progress, self.every_s = step, total, split, on_progress, every_s
        self.first = self.done = 0
        self.t0 = self.last = time.monotonic()

    def start(self, done: int = 0) -> None:
        """The step begins with `done` items already there (a resumed build); reports at once."""
        self.first = self.done = done
        self.t0 = time.monotonic()
        self._report()

    def update(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if done >= self.total or now - self.last >= self.every_s:
            self._report(now)

    def _report(self, now: float | None = None) -> None:
        self.last = now or time.monotonic()
        if self.on_progress is None:
            return
        elapsed = self.last - self.t0
        rate = (self.done - self.first) / elapsed if elapsed > 0 and self.done > self.first else None
        eta_s = (self.total - self.done) / rate if rate else None
        self.on_progress({"event": EVENT, "step": self.step, "split": self.split, "done": self.done,
                          "total": self.total, "rate": round(rate, 1) if rate else None,
                          "eta_s": round(eta_s, 1) if eta_s is not None else None})


def progress_line(e: dict[str, Any]) -> str:
    """e.g. 'decoding train images: 12,000/94,000 (1,250/s, 58 s left)'."""
    what = STEPS.get(e.get("step", ""), "{split} " + str(e.get("step"))).format(split=e.get("split") or "all")
    done, total = e.get("done", 0), e.get("total", 0)
    line = f"{what}: {done:,}/{total:,}"
    if done >= total:
        return line + " done"
    extra = [f"{e['rate']:,.0f}/s" if e.get("rate") else None,
             f"{_duration(e['eta_s'])} left" if e.get("eta_s") is not None else None]
    return line + (f" ({', '.join(x for x in extra if x)})" if any(extra) else "")


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"
