"""A run in a background thread, so the person can type while it goes. The graph's interrupts (confirm the
task, paused) wait here until the session answers them from the person's input."""

from __future__ import annotations

import threading
from typing import Any, Callable

# `runner.start`'s signature: (ctx, task, requirement, run_id=, on_event=, on_interrupt=) -> summary
StartFn = Callable[..., dict[str, Any]]
_UNSET = object()


class RunThread:
    def __init__(self, start: StartFn, ctx: Any, task: dict[str, Any], requirement: str, run_id: str,
                 on_event: Callable[[dict[str, Any]], None]) -> None:
        self.run_id = run_id
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._answer: Any = _UNSET
        self._closing = False
        self._thread = threading.Thread(
            target=self._main, name=f"run-{run_id}", daemon=True,
            args=(start, ctx, task, requirement, run_id, on_event))

    def start(self) -> RunThread:
        self._thread.start()
        return self

    def _main(self, start: StartFn, ctx, task, requirement, run_id, on_event) -> None:
        try:
            self.summary = start(ctx, task, requirement, run_id=run_id, on_event=on_event,
                                 on_interrupt=self._on_interrupt)
        except BaseException as err:  # noqa: BLE001 - handed to the session, which shows it
            self.error = err

    # -- interrupts ---------------------------------------------------------------------------------------
    def _on_interrupt(self, payload: dict[str, Any]) -> Any:
        """Called on the run's thread: wait for the person's answer (None ends the stream; the run stays
        resumable)."""
        with self._cond:
            if self._closing:
                return None
            self._pending, self._answer = payload, _UNSET
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._answer is not _UNSET or self._closing)
            answer = None if self._answer is _UNSET else self._answer
            self._pending, self._answer = None, _UNSET
            return answer

    @property
    def pending(self) -> dict[str, Any] | None:
        """The interrupt waiting for an answer, if any."""
        with self._cond:
            return self._pending

    def answer(self, value: Any) -> None:
        with self._cond:
            if self._pending is not None:
                self._answer = value
                self._cond.notify_all()

    def close(self) -> None:
        """Leave: any interrupt waiting now, or later, is answered with None."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    # -- state --------------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()
