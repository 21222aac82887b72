"""Progress of a build reaches people the way a run's other events do: through the graph's custom stream to
`capnas run`'s lines and `capnas chat`'s live view."""

from __future__ import annotations

from pathlib import Path

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from capnas.commands.run_cmd import _progress_printer
from capnas.console.dashboard import RunView, event_line
from capnas.graph.context import Context
from capnas.graph.journal import Journal
from capnas.graph.services import RunServices
from capnas.tools.task import Task


class _State(TypedDict, total=False):
    splits: dict


def test_a_build_inside_a_node_streams_its_progress_as_custom_events(tmp_path: Path, cache_root: Path) -> None:
    svc = RunServices(ctx=Context(run_dir=str(tmp_path / "ws")), run_id="r", journal=Journal(tmp_path / "j.sqlite"),
                      task=Task(dataset="shapes:40", image_size=16, min_count=1))

    # (svc as a default, not a closure: compiling a graph reads the attributes its nodes' closures name)
    def node(state: _State, svc: RunServices = svc) -> _State:
        return {"splits": svc.prepared.split_sizes}  # the planner node reads it the same way

    builder = StateGraph(_State)
    builder.add_node("prepare", node)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", END)
    custom = [chunk for mode, chunk in builder.compile().stream({}, stream_mode=["custom", "updates"])
              if mode == "custom"]
    assert svc.prepared.built and svc.prepared.dir.parent == cache_root
    ends = {(e["step"], e["split"]) for e in custom if e["event"] == "progress" and e["done"] == e["total"]}
    assert ends == {(step, split) for step in ("decode", "tokenize") for split in ("train", "val", "test")}


PROGRESS = {"event": "progress", "step": "decode", "split": "train", "done": 12_000, "total": 94_000,
            "rate": 1_000.0, "eta_s": 82.0}


def test_capnas_run_prints_each_progress_event_as_a_line(capsys) -> None:
    on_event = _progress_printer(json_mode=False)
    on_event(PROGRESS)
    on_event({**PROGRESS, "done": 94_000, "eta_s": 0.0})
    assert capsys.readouterr().err.splitlines() == [
        "  decoding train images: 12,000/94,000 (1,000/s, 1 min 22 s left)",
        "  decoding train images: 94,000/94,000 done",
    ]


def test_capnas_chat_shows_the_step_in_progress_and_writes_only_its_end() -> None:
    view = RunView("run1", {"budgets": {}})
    view.on_event(PROGRESS)
    assert "decoding train images: 12,000/94,000 (1,000/s, 1 min 22 s left)" in _text(view)
    assert event_line(PROGRESS, view, verbose=False) is None  # the live view shows it; the transcript waits
    assert "12,000/94,000" in event_line(PROGRESS, view, verbose=True)  # no live view (--plain): every line
    done = {**PROGRESS, "done": 94_000}
    view.on_event(done)
    assert "decoding" not in _text(view)
    assert event_line(done, view, verbose=False) == "  [dim]decoding train images: 94,000/94,000 done[/dim]"


def _text(view: RunView) -> str:
    from rich.console import Console

    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(view.render())
    return console.export_text()
