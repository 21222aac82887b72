"""`capnas train FILE.py --dataset SPEC`: train one model file in the sandbox and score it on the val split.

Exit status: 0 trained, 1 the training failed (the candidate crashed, was killed, or scoring failed), 2 bad input
or no sandbox to train in. The run dir holds the job (weights, ids, captions, `train_result.json`); running the
same command again returns the stored result, or resumes a job that was interrupted."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any, NoReturn

import typer

from capnas.commands._checks import (OneLineErrors, allowed, check_device, check_field, check_file, fail as _fail,
                                    load_data, vocabulary_size)
from capnas.commands.eval_cmd import METRIC_LABELS
from capnas.tools.task import Budgets, Task, default_image_size, default_min_count

_TASK = Task.model_fields
COMMAND = "train"
_HP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_hparams(items: list[str], declared: set[str] | None) -> dict[str, Any]:
    """`["lr=1e-3", "dropout=0.2"]` -> {"lr": 0.001, "dropout": 0.2}. Values are JSON where they parse as JSON
    (numbers, true/false, null, lists), else strings. Raises ValueError naming the offending entry."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not _HP_NAME.fullmatch(name) or not raw.strip():
            raise ValueError(f"--hp {item!r}: expected NAME=VALUE, e.g. --hp lr=1e-3")
        if name == "max_len":
            raise ValueError(f"--hp {item!r}: max_len is the task's caption length; set it with --max-len")
        if declared is not None and name not in declared:
            raise ValueError(f"--hp {item!r}: the model does not declare {name!r} in supported_hyperparameters() "
                             f"(it declares: {', '.join(sorted(declared)) or 'nothing'})")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw.strip()
    return out


def default_run_dir(file: Path, source: str, dataset: str, settings: dict[str, Any]) -> Path:
    """`capnas-train/<stem>-<hash>` in the working directory: the same file and settings find the same job again."""
    key = json.dumps({"code": source, "dataset": dataset, **settings}, sort_keys=True, default=str)
    return Path("capnas-train") / f"{file.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def register(app: typer.Typer) -> None:
    @app.command("train", cls=OneLineErrors)
    def train_command(
        file: Path = typer.Argument(..., metavar="FILE.py", help="The caption-net-v1 model module to train."),
        dataset: str = typer.Option(
            ..., "--dataset", metavar="SPEC",
            help="'shapes', 'shapes:N', or the path of a Karpathy/COCO captions json."),
        images: Path | None = typer.Option(
            None, "--images", metavar="DIR", help="Image folder of a json dataset (default: images/ beside the json)."),
        epochs: int = typer.Option(
            10, "--epochs", help=f"Passes over the training split ({allowed(Budgets, 'epochs')})."),
        train_time_s: float | None = typer.Option(
            None, "--train-time-s", metavar="S",
            help="Seconds of training (learn plus val generation); the epoch in flight is cut short. Default: none."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
        hp: list[str] = typer.Option(
            [], "--hp", metavar="NAME=VALUE",
            help="A hyperparameter the model declares, e.g. --hp lr=1e-3 (repeatable)."),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch, each with all its captions."),
        patience: int = typer.Option(
            3, "--patience", min=0, help="Stop after this many epochs without a better val CIDEr (0: never)."),
        image_size: int | None = typer.Option(
            _TASK["image_size"].default, "--image-size", show_default=False,
            help=f"Square input size in pixels, {allowed(Task, 'image_size')} (default: 32 for shapes, 224 for photos, "
                 "as `capnas run`)."),
        max_len: int = typer.Option(
            _TASK["max_len"].default, "--max-len",
            help=f"Caption length, BOS and EOS included ({allowed(Task, 'max_len')})."),
        min_count: int | None = typer.Option(
            _TASK["min_count"].default, "--min-count", show_default=False,
            help="Minimum train-caption count for a word to enter the vocabulary (default: 1 for shapes, 5 for "
                 "real captions, as `capnas run`)."),
        seed: int = typer.Option(0, "--seed", help="Seed of torch and of the batch order."),
        threads: int | None = typer.Option(
            None, "--threads", min=1, help="torch CPU threads in the job (default: torch's, one per core)."),
        run_dir: Path | None = typer.Option(
            None, "--run-dir", metavar="DIR", help="Where the job lives (default: ./capnas-train/<file>-<hash>)."),
        as_json: bool = typer.Option(
            False, "--json", help="Print one JSON object: metrics, curve, exit_reason, params, images_per_s, ..."),
    ) -> None:
        """Train FILE.py in the sandbox on the dataset's train split; report val metrics of its best epoch.

        Exit status: 0 trained, 1 training failed, 2 bad input (or no sandbox to train in)."""

        def fail(message: str, status: int = 2) -> NoReturn:
            _fail(COMMAND, message, status)

        # Every value is checked before anything runs: a bad one prepares no data and starts no sandbox.
        check_field(COMMAND, "--epochs", epochs, Budgets)
        check_field(COMMAND, "--train-time-s", train_time_s, Budgets)
        for flag, value in (("--image-size", image_size), ("--max-len", max_len), ("--min-count", min_count)):
            check_field(COMMAND, flag, value, Task)
        device = check_device(COMMAND, device)
        if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
            fail(f"--run-dir {run_dir}: not a folder")
        check_file(COMMAND, file)
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{file}: cannot read it as UTF-8 text: {exc}")
        try:
            tree = ast.parse(source, filename=str(file))
        except SyntaxError as exc:
            fail(f"{file}:{exc.lineno}: not valid Python: {exc.msg}")
        except ValueError as exc:  # null bytes
            fail(f"{file}: not valid Python: {exc}")

        from capnas.contracts import get_contract
        from capnas.contracts.static_checks import check_source, declared_hyperparameters, must_stop

        try:
            hparams = parse_hparams(hp, declared_hyperparameters(tree))
        except ValueError as exc:
            fail(str(exc))
        data = load_data(COMMAND, dataset, images)
        image_size = image_size if image_size is not None else default_image_size(dataset)
        min_count = min_count if min_count is not None else default_min_count(dataset)
        try:
            contract = get_contract("caption-net-v1", vocab_size=vocabulary_size(COMMAND, data, min_count),
                                    image_size=image_size, max_len=max_len)
        except ValueError as exc:
            fail(f"the task does not fit the contract: {exc}")
        stopping = [v for v in check_source(source, contract) if must_stop([v])]
        if stopping:  # the file must not run: syntax, imports, security, signatures
            first = stopping[0]
            more = f" (and {len(stopping) - 1} more: {', '.join(v.code for v in stopping[1:])})" if stopping[1:] else ""
            fail(f"{file}:{first.line or '?'}: {first.code} {first.message}{more}; `capnas validate` shows them all")

        from capnas.sandbox import SandboxError, SandboxUnavailable
        from capnas.tools.data.datasets import DatasetError, VocabularyError, prepare_dataset
        from capnas.tools.jobs.training import RESULT_FILE, train_candidate
        from capnas.tools.scoring.metrics import MetricsError

        status = _Status(as_json)
        try:
            status.say(f"preparing {data.source} ({image_size} px, max_len {max_len})")
            prepared = prepare_dataset(data, image_size=image_size, max_len=max_len, min_count=min_count)
        except (DatasetError, VocabularyError) as exc:
            fail(f"--dataset {dataset}: {exc}")
        settings = {"hparams": hparams, "epochs": epochs, "batch_size": batch_size, "patience": patience or None,
                    "seed": seed, "prepared": prepared.dir.name}
        run_dir = run_dir or default_run_dir(file, source, dataset, settings)
        if (run_dir / RESULT_FILE).exists():
            status.say(f"the job in {run_dir} has finished before: its stored result follows "
                       "(give another --run-dir to train again)")

        try:
            with status.progress(epochs) as progress:
                result = train_candidate(
                    source, prepared, data, run_dir, hparams=hparams, epochs=epochs, train_time_s=train_time_s,
                    device=device, batch_size=batch_size, seed=seed, patience=patience or None, threads=threads,
                    on_event=progress)
        except (SandboxUnavailable, SandboxError) as exc:
            fail(f"{file}: the training job could not run: {exc}")
        except MetricsError as exc:
            fail(f"{file}: scoring failed: {exc}", 1)
        except ValueError as exc:  # the run dir holds another job
            fail(str(exc))

        if as_json:
            typer.echo(json.dumps({
                "ok": result.ok, "exit_reason": result.exit_reason, "metrics": result.metrics,
                "curve": [p.model_dump(mode="json") for p in result.curve], "best_epoch": result.best_epoch,
                "params": result.params, "images_per_s": result.images_per_s, "hparams": result.hparams,
                "device": result.device, "run_dir": str(result.run_dir), "error": result.error}))
        else:
            _print_result(file, result)
        if not result.ok:
            if result.error:
                typer.echo(f"capnas train: {file}: {result.error}", err=True)
            if not result.finished:
                typer.echo(f"capnas train: the job was interrupted ({result.exit_reason}); run the same command "
                           f"again to resume it from its last epoch ({result.run_dir})", err=True)
            raise typer.Exit(1)


class _Status:
    """Progress on stderr: bars on a terminal, one line per epoch elsewhere (none at all with --json off a TTY)."""

    def __init__(self, as_json: bool):
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.quiet = as_json and not self.console.is_terminal

    def say(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, style="dim")

    def progress(self, epochs: int) -> "_Progress":
        return _Progress(self, epochs)


class _Progress:
    """The trainer's event callback (called from its threads): an epoch bar and a batch bar."""

    def __init__(self, status: _Status, epochs: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.status, self.lock = status, threading.Lock()
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=status.console,
                             transient=True, disable=not status.console.is_terminal)
        self.epochs = self.bars.add_task("epochs", total=epochs, info="")
        self.batches = self.bars.add_task("batches", total=None, info="", visible=False)

    def __enter__(self) -> "_Progress":
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self._handle(event)

    def _handle(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "start":
            self.bars.update(self.epochs, completed=event.get("resumed_from", 0))
            resumed = f", resumed after epoch {event['resumed_from']}" if event.get("resumed_from") else ""
            self._line(f"training {event.get('params', 0):,} parameters on {event.get('train_images')} images, "
                       f"{event.get('device')}{resumed}")
        elif name == "step":
            self.bars.update(self.batches, description=f"epoch {event['epoch']}", completed=event["step"],
                             total=event["steps"], info=f"{event.get('images_per_s', 0):.0f} images/s", visible=True)
        elif name == "epoch":
            self.bars.update(self.epochs, completed=event["epoch"], info=f"loss {_num(event.get('loss'))}")
            self._line(f"epoch {event['epoch']}: loss {_num(event.get('loss'))}, "
                       f"{event.get('images_per_s', 0):.0f} images/s, {event.get('train_s', 0):.1f} s"
                       + (" (cut short by the time budget)" if event.get("partial") else ""))
        elif name == "val":
            self._line(f"epoch {event['epoch']}: val CIDEr {event['cider']:.4f} "
                       f"(best {event['best_cider']:.4f} at epoch {event['best_epoch']})")
        elif name == "early_stop":
            self._line(f"early stop: no better val CIDEr since epoch {event['best_epoch']} "
                       f"(patience {event['patience']})")
        elif name == "evaluating":
            self.bars.update(self.batches, visible=False)
            self._line(f"scoring epoch {event['epoch']}'s {event['images']} val captions")

    def _line(self, text: str) -> None:
        if not self.status.quiet:
            self.status.console.print(text, style="dim")


def _num(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else str(x)


def _print_result(file: Path, result) -> None:  # result: TrainResult
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    title = f"{file.name}: {result.exit_reason}, {result.params or 0:,} parameters, {result.device}"
    curve = Table(title=title, min_width=len(title) + 4)
    for column in ("epoch", "loss", "val CIDEr", "images/s", "seconds"):
        curve.add_column(column, justify="right")
    for p in result.curve:
        mark = " *" if p.epoch == result.best_epoch else ""
        curve.add_row(f"{p.epoch}{mark}", _num(p.loss), _num(p.val_cider) if p.val_cider is not None else "-",
                      f"{p.images_per_s:.0f}", f"{p.train_s + p.gen_s:.1f}" + (" (partial)" if p.partial else ""))
    console.print(curve)
    if result.metrics:
        title = f"val metrics, best epoch {result.best_epoch}"
        table = Table(title=title, min_width=len(title) + 4)
        table.add_column("metric")
        table.add_column("score", justify="right")
        for key, value in result.metrics.items():
            table.add_row(METRIC_LABELS.get(key, key), f"{value:.4f}")
        console.print(table)
    if result.images_per_s:
        console.print(f"{result.images_per_s:.0f} training images/s; run dir {result.run_dir}")
