"""`capnas lemur import SRC.py -o DEST.py` and `capnas lemur score DIR --dataset SPEC`: exchange with LEMUR
(ABrain-One nn-dataset). Import turns a LEMUR `Net` file into a caption-net-v1 module (exit 1 and one line
naming the defect when it cannot); score imports, validates, trains and scores every file of a folder.
`capnas export RUN_ID --format lemur` goes the other way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

from capnas.commands._checks import (OneLineErrors, allowed, check_device, check_field, check_file, fail as _fail,
                                    load_data, vocabulary_size)
from capnas.tools.task import Budgets, Task, default_image_size, default_min_count

_TASK = Task.model_fields
_BUDGETS = Budgets.model_fields


def import_command(
    src: Path = typer.Argument(..., metavar="SRC.py", help="A LEMUR model file (ab/nn/nn/*.py of nn-dataset)."),
    out: Path = typer.Option(..., "-o", "--out", metavar="DEST.py", help="The caption-net-v1 module to write."),
) -> None:
    """Write a caption-net-v1 module that keeps SRC.py's code verbatim and adds an adapter.

    Exit status: 0 written, 1 the file cannot be served (the line names the defect), 2 bad input."""
    command = "lemur import"
    check_file(command, src)
    if out.exists() and out.is_dir():
        _fail(command, f"--out {out}: is a folder; give the file to write")
    try:
        source = src.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(command, f"{src}: cannot read it as UTF-8 text: {exc}")

    from capnas.tools.lemur.importer import LemurImportError, import_lemur

    try:
        module = import_lemur(source, src.name)
    except LemurImportError as exc:
        _fail(command, f"{src}: refused: {exc}", 1)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(module, encoding="utf-8")
    except OSError as exc:
        _fail(command, f"--out {out}: cannot write it: {exc}")
    typer.echo(f"{out}: caption-net-v1 module around {src.name}; check it with `capnas validate {out} --dataset SPEC`")


def score_command(
    folder: Path = typer.Argument(..., metavar="DIR", help="A folder of LEMUR model files."),
    dataset: str = typer.Option(..., "--dataset", metavar="SPEC",
                                help="'shapes', 'shapes:N', or the path of a Karpathy/COCO captions json."),
    images: Path | None = typer.Option(None, "--images", metavar="DIR", help="Image folder of a json dataset."),
    epochs: int = typer.Option(1, "--epochs", help=f"Epochs per model ({allowed(Budgets, 'epochs')})."),
    train_time_s: float | None = typer.Option(
        _BUDGETS["train_time_s"].default, "--train-time-s", help="Training seconds per model (learn and val generation)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per batch."),
    image_size: int | None = typer.Option(_TASK["image_size"].default, "--image-size", show_default=False,
                                          help="Square input size in pixels (default: 32 for shapes, 224 for photos)."),
    max_len: int = typer.Option(_TASK["max_len"].default, "--max-len",
                                help=f"Caption length, BOS and EOS included ({allowed(Task, 'max_len')})."),
    min_count: int | None = typer.Option(_TASK["min_count"].default, "--min-count", show_default=False,
                                         help="Minimum train-caption count for a vocabulary word."),
    device: str = typer.Option("cpu", "--device", help="Where validation and training run: cpu, cuda or cuda:N."),
    run_dir: Path = typer.Option(Path("capnas-lemur"), "--run-dir", metavar="DIR",
                                 help="Where each model's training job is kept (one folder per file)."),
    seed: int = typer.Option(0, "--seed", help="Seed of training and of the probe."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as one JSON list."),
) -> None:
    """Import, validate, train and score every file of DIR; print a leaderboard beside each refusal's reason.

    Exit status: 0 at least one file scored, 1 none did, 2 bad input (or no sandbox to run in)."""
    command = "lemur score"

    def fail(message: str, status: int = 2) -> NoReturn:
        _fail(command, message, status)

    check_field(command, "--epochs", epochs, Budgets)
    check_field(command, "--train-time-s", train_time_s, Budgets)
    for flag, value in (("--image-size", image_size), ("--max-len", max_len), ("--min-count", min_count)):
        check_field(command, flag, value, Task)
    device = check_device(command, device)
    if not folder.is_dir():
        fail(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    if run_dir.exists() and not run_dir.is_dir():
        fail(f"--run-dir {run_dir}: not a folder")

    from capnas.tools.lemur.score import leaderboard, lemur_contract, lemur_files, score_folder

    if not lemur_files(folder):
        fail(f"{folder}: no .py model files in it")
    data = load_data(command, dataset, images)
    image_size = image_size if image_size is not None else default_image_size(dataset)
    min_count = min_count if min_count is not None else default_min_count(dataset)
    try:
        contract = lemur_contract(vocabulary_size(command, data, min_count), image_size, max_len)
    except ValueError as exc:
        fail(f"the task does not fit the contract: {exc}")

    from capnas.sandbox import SandboxError, SandboxUnavailable
    from capnas.tools.data.datasets import DatasetError, VocabularyError, prepare_dataset
    from capnas.tools.jobs.training import train_candidate

    try:
        prepared = prepare_dataset(data, image_size=image_size, max_len=max_len, min_count=min_count)
    except (DatasetError, VocabularyError) as exc:
        fail(f"--dataset {dataset}: {exc}")

    def train(module: str, job_dir: Path):
        return train_candidate(module, prepared, data, job_dir, epochs=epochs, train_time_s=train_time_s,
                               device=device, batch_size=batch_size, seed=seed, patience=None,
                               memory_mb=contract.budgets.max_memory_mb)

    def announce(row) -> None:
        if not as_json:
            typer.echo(f"{row.file}: {row.stage}" + (f" ({row.reason})" if row.reason else ""), err=True)

    try:
        rows = score_folder(folder, contract, train, run_dir, device=device, on_row=announce)
    except (SandboxUnavailable, SandboxError) as exc:
        fail(f"the sandbox could not run: {exc}")
    rows = leaderboard(rows)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in rows]))
    else:
        _print_leaderboard(rows, dataset, epochs)
    raise typer.Exit(0 if any(r.stage == "scored" for r in rows) else 1)


def _print_leaderboard(rows, dataset: str, epochs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from capnas.commands.eval_cmd import METRIC_LABELS

    metrics = ("bleu_4", "meteor", "rouge_l", "cider")
    table = Table(title=f"LEMUR files re-scored on {dataset} (val split, {epochs} epoch{'s' * (epochs != 1)})")
    table.add_column("file")
    table.add_column("params", justify="right")
    for key in metrics:
        table.add_column(METRIC_LABELS.get(key, key), justify="right")
    table.add_column("stopped at / why")
    for r in rows:
        scores = [f"{r.metrics[k]:.4f}" if k in r.metrics else "-" for k in metrics]
        why = "" if r.stage == "scored" else f"{r.stage}: {r.reason}"
        table.add_row(r.file, f"{r.params:,}" if r.params else "-", *scores, why)
    Console(highlight=False, width=200).print(table)


def register(app: typer.Typer) -> None:
    lemur_app = typer.Typer(help="Exchange models with LEMUR (ABrain-One nn-dataset).", no_args_is_help=True)
    lemur_app.command("import", cls=OneLineErrors)(import_command)
    lemur_app.command("score", cls=OneLineErrors)(score_command)
    app.add_typer(lemur_app, name="lemur")
