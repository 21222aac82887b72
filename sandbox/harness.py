"""The in-sandbox harness: `python -m capnas.sandbox.harness <scratch>/job.json`.

It reads the job, confines itself (`capnas.sandbox.confine`), says so with a `confined` event, runs one
entry and writes that entry's return value to `<scratch>/result.json` (atomically). Entries are plain
functions in `ENTRIES`; a new one (`train`, `generate`) is one function and one `@entry("name")` line.

Progress goes to the launcher as JSON lines on stdout, `{"event": "step", "loss": 1.9, ...}`, through
`emit`; any other output is kept as the job's stdout tail. Nothing here may import LangChain, the journal
or settings that could hold keys: the harness imports the standard library, pydantic, `capnas.sandbox`
and, inside entries, torch and `capnas.contracts`.
"""

from __future__ import annotations

import json
import math
import os
import runpy
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from capnas.sandbox.job import CANDIDATE_FILE, EXIT_CONFINEMENT_FAILED, RESULT_FILE, HarnessInput, Job

# A duplicate of fd 1 taken at start-up: events still reach the launcher if the job rebinds sys.stdout.
_event_stream = None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def emit(event: str, **fields: Any) -> None:
    """Send one progress event to the launcher, e.g. `emit("step", step=10, loss=2.31, images_per_s=850.0)`."""
    line = json.dumps({"event": event, **_json_safe(fields)}, default=str)
    stream = _event_stream or sys.__stdout__
    stream.write(line + "\n")
    stream.flush()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(_json_safe(data), f, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- entries -----------------------------------------------------------------------------------------------

Entry = Callable[[Job], "dict[str, Any] | int | None"]
ENTRIES: dict[str, Entry] = {}


def entry(name: str) -> Callable[[Entry], Entry]:
    """Register an entry point. It returns a JSON-able dict (written to result.json, exit 0), an int
    (the exit status, no result file) or None (exit 0, no result file)."""

    def register(fn: Entry) -> Entry:
        ENTRIES[name] = fn
        return fn

    return register


@entry("script")
def run_script(job: Job) -> dict[str, Any]:
    """Run a Python file as `__main__`, as `python FILE` would; the result is its exit status."""
    if job.script is None:
        raise ValueError("entry 'script' needs job.script")
    return {"exit_status": run_main(str(job.script), argv=job.args.get("argv", []))}


@entry("snippet")
def run_snippet(job: Job) -> dict[str, Any]:
    """The coder's try-out script with a tiny training batch and the contract (`capnas.sandbox.snippet`)."""
    from capnas.sandbox.snippet import run

    return run(job, run_main)


def run_main(path: str, init_globals: dict[str, Any] | None = None, argv: tuple | list = ()) -> int:
    """Run a Python file as `__main__`, as `python FILE` would, with `init_globals` set; returns its exit status."""
    sys.argv = [path, *[str(a) for a in argv]]
    sys.path.insert(0, os.path.dirname(path))
    status = 0
    try:
        runpy.run_path(path, init_globals=init_globals, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            status = 0
        elif isinstance(e.code, int):
            status = e.code
        else:
            print(e.code, file=sys.stderr)
            status = 1
    except BaseException:  # noqa: BLE001 - the script's traceback is its output, exactly like `python FILE`
        traceback.print_exc()
        status = 1
    return status


@entry("probe")
def run_probe(job: Job) -> dict[str, Any]:
    """The contract's dynamic probe on `<scratch>/candidate.py`; its dict is the result."""
    import inspect

    from capnas.contracts.probe import run_probe as probe  # lazily: torch is imported only past the walls

    kwargs = dict(job.args)
    threads = kwargs.pop("threads", None)
    if threads:  # as many as a training job beside it gets: oversubscribed cores distort the latency clause
        import torch

        torch.set_num_threads(max(1, int(threads)))
    if "device" in inspect.signature(probe).parameters:
        kwargs["device"] = job.device  # the launcher's view wins: "cuda:N" outside is "cuda" in here
    return probe(code_path=job.scratch / CANDIDATE_FILE, **kwargs)


@entry("train")
def run_train(job: Job) -> dict[str, Any]:
    """Train `<scratch>/candidate.py` on the mounted prepared data (`capnas.sandbox.train_loop.train`)."""
    from capnas.sandbox.train_loop import train

    if job.data_dir is None:
        raise ValueError("entry 'train' needs job.data_dir: mount the prepared dataset's sandbox_dir")
    return train(job.scratch, job.data_dir, job.args, emit, device=job.device)


@entry("generate")
def run_generate(job: Job) -> dict[str, Any]:
    """Ids for one split from saved weights (`capnas.sandbox.train_loop.generate`)."""
    from capnas.sandbox.train_loop import generate

    if job.data_dir is None:
        raise ValueError("entry 'generate' needs job.data_dir: mount the prepared dataset's sandbox_dir")
    return generate(job.scratch, job.data_dir, job.args, emit, device=job.device)


@entry("features")
def run_features(job: Job) -> dict[str, Any]:
    """Frozen-encoder tokens of the prepared images (`capnas.sandbox.features.extract`)."""
    from capnas.sandbox.features import extract

    if job.data_dir is None:
        raise ValueError("entry 'features' needs job.data_dir: mount the prepared dataset's sandbox_dir")
    return extract(job.scratch, job.data_dir, job.args, emit, device=job.device)


# -- main --------------------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    global _event_stream
    if len(argv) != 1:
        print("usage: python -m capnas.sandbox.harness <scratch>/job.json", file=sys.stderr)
        return 2
    _event_stream = os.fdopen(os.dup(1), "w", buffering=1)
    spec = HarnessInput.model_validate_json(Path(argv[0]).read_text())
    job = spec.job

    from capnas.sandbox.confine import ConfinementError, confine

    try:
        layers = confine(spec.confinement)
    except ConfinementError as e:
        print(f"capnas sandbox: could not confine the job: {e}", file=sys.stderr)
        return EXIT_CONFINEMENT_FAILED
    emit("confined", layers=layers)
    # CPython ignores SIGXFSZ (writes past RLIMIT_FSIZE then fail with EFBIG); the default action kills the
    # job instead, so a file-size overrun reads as `file_size_limit`, not as whatever the job made of EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)

    fn = ENTRIES.get(job.entry)
    if fn is None:
        print(f"capnas sandbox: unknown entry {job.entry!r}; known: {sorted(ENTRIES)}", file=sys.stderr)
        return 2
    os.chdir(job.scratch)
    try:
        out = fn(job)
    except BaseException:  # noqa: BLE001 - reported as the job's stderr and exit status 1
        traceback.print_exc()
        return 1
    if isinstance(out, int):
        return out
    if out is not None:
        write_json_atomic(job.scratch / RESULT_FILE, out)
    if job.entry in ("script", "snippet"):
        return int(out["exit_status"]) if out else 0
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    emit("exit", code=code)  # tells a real exit status 137 from a SIGKILL once bwrap has folded both into 137
    sys.exit(code)
