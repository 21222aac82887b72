"""`capnas validate FILE.py --dataset SPEC`: check a model file against its contract (static checks, then the
sandboxed probe). Exit status: 0 valid, 1 violations, 2 bad input or no sandbox to run the probe in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

from capnas.commands._checks import (OneLineErrors, allowed, check_device, check_field, check_file, fail as _fail,
                                    load_data, vocabulary_size)
from capnas.contracts.caption_net_v1 import DEFAULT_BUDGETS
from capnas.tools.task import Task, default_image_size, default_min_count

_TASK = Task.model_fields
COMMAND = "validate"


def register(app: typer.Typer) -> None:
    @app.command("validate", cls=OneLineErrors)
    def validate_command(
        file: Path = typer.Argument(..., metavar="FILE.py", help="The model module to check."),
        dataset: str = typer.Option(
            ..., "--dataset", metavar="SPEC",
            help="'shapes', 'shapes:N', or the path of a Karpathy/COCO captions json: gives the vocabulary size."),
        images: Path | None = typer.Option(
            None, "--images", metavar="DIR", help="Image folder of a json dataset (default: images/ beside the json)."),
        contract_name: str = typer.Option("caption-net-v1", "--contract", metavar="NAME", help="The contract to check."),
        image_size: int | None = typer.Option(
            _TASK["image_size"].default, "--image-size", show_default=False,
            help=f"Square input size in pixels, {allowed(Task, 'image_size')} (default: 32 for shapes, 224 for photos, "
                 "as `capnas run`)."),
        max_len: int = typer.Option(_TASK["max_len"].default, "--max-len",
                                  help=f"Caption length, BOS and EOS included ({allowed(Task, 'max_len')})."),
        min_count: int | None = typer.Option(
            _TASK["min_count"].default, "--min-count", show_default=False,
            help="Minimum train-caption count for a word to enter the vocabulary (default: 1 for shapes, 5 for "
                 "real captions, as `capnas run`)."),
        max_params: int = typer.Option(_TASK["max_params"].default, "--max-params",
                                     help=f"Parameter budget ({allowed(Task, 'max_params')})."),
        max_latency_ms: float = typer.Option(
            _TASK["max_latency_ms"].default, "--max-latency-ms", help="Inference budget per image, in ms."),
        max_probe_s: float = typer.Option(
            DEFAULT_BUDGETS["max_probe_s"], "--max-probe-s",
            help="Seconds for the whole probe (construct, train_setup, learn, forward); LEMUR-sized models need more."),
        max_memory_mb: int = typer.Option(DEFAULT_BUDGETS["max_memory_mb"], "--max-memory-mb",
                                          help="Memory the probe may use, in MB."),
        device: str = typer.Option("cpu", "--device", help="Where the probe runs: cpu, cuda or cuda:N."),
        seed: int = typer.Option(0, "--seed", help="Seed of the probe's synthetic data and of torch."),
        as_json: bool = typer.Option(
            False, "--json", help='Print {"ok", "violations", "params", "latency_ms"} as one JSON object.'),
    ) -> None:
        """Check FILE.py against the contract: static checks, then a probe in the sandbox.

        Exit status: 0 valid, 1 violations, 2 bad input (or no sandbox to run the probe in)."""

        def fail(message: str) -> NoReturn:
            _fail(COMMAND, message)

        # Every value is checked before anything runs: a bad one costs no dataset pass and no sandbox.
        for flag, value in (("--image-size", image_size), ("--max-len", max_len), ("--min-count", min_count),
                            ("--max-params", max_params), ("--max-latency-ms", max_latency_ms)):
            check_field(COMMAND, flag, value, Task)
        for flag, value in (("--max-probe-s", max_probe_s), ("--max-memory-mb", max_memory_mb)):
            if not value > 0:
                fail(f"{flag} {value:g}: must be greater than 0")
        device = check_device(COMMAND, device)
        check_file(COMMAND, file)
        try:
            source = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{file}: cannot read it as UTF-8 text: {exc}")

        from capnas.contracts import CONTRACTS, get_contract

        if contract_name not in CONTRACTS:
            fail(f"--contract {contract_name}: unknown contract; known: {', '.join(sorted(CONTRACTS))}")
        data = load_data(COMMAND, dataset, images)
        image_size = image_size if image_size is not None else default_image_size(dataset)
        min_count = min_count if min_count is not None else default_min_count(dataset)
        vocab_size = vocabulary_size(COMMAND, data, min_count)
        try:
            contract = get_contract(contract_name, vocab_size=vocab_size, image_size=image_size, max_len=max_len,
                                    max_params=max_params, max_latency_ms=max_latency_ms, max_probe_s=max_probe_s,
                                    max_memory_mb=max_memory_mb)
        except ValueError as exc:
            fail(f"--contract {contract_name}: {exc}")

        from capnas.sandbox import SandboxError, SandboxUnavailable
        from capnas.tools.jobs.validation import validate_code

        try:
            report = validate_code(source, contract, device, seed=seed)
        except (SandboxUnavailable, SandboxError) as exc:
            fail(f"{file}: the probe could not run: {exc}")

        if as_json:
            typer.echo(json.dumps(report.cli_json()))
        else:
            _print_report(file, source, contract.name, report)
        raise typer.Exit(0 if report.ok else 1)


def _print_report(file: Path, source: str, contract: str, report) -> None:  # report: ValidationReport
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    if report.ok:
        console.print(Text.assemble((f"{file}", "bold"), ": ", ("valid", "bold green"),
                                    f" under {contract} ({report.params:,} parameters, "
                                    f"{report.latency_ms:.1f} ms per image)"))
        return
    count = len(report.violations)
    console.print(Text.assemble((f"{file}", "bold"), ": ", (f"{count} violation{'s' * (count != 1)}", "bold red"),
                                f" of {contract}"))
    lines = source.splitlines()
    for v in report.violations:
        location = f"{file}:{v.line}" if v.line else str(file)
        console.print(Text.assemble("  ", (v.code, "bold red"), f"  {location}  ", (v.clause, "bold")))
        if v.line and 0 < v.line <= len(lines):
            console.print(Text(f"    {v.line:>4} | {lines[v.line - 1].rstrip()}", style="cyan"))
        console.print(Text(f"    found: {v.message}"))
        console.print(Text(f"    hint: {v.hint}", style="dim"))
