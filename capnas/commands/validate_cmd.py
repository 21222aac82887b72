"""`capnas validate FILE.py --dataset SPEC`: check a model file against its contract (static checks, then the
sandboxed probe). Exit status: 0 valid, 1 violations, 2 bad input or no sandbox to run the probe in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer

from capnas.tools.task import Task

_TASK = Task.model_fields


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate_command(
        file: Path = typer.Argument(..., metavar="FILE.py", help="The model module to check."),
        dataset: str = typer.Option(
            ..., "--dataset", metavar="SPEC",
            help="'shapes', 'shapes:N', or the path of a Karpathy/COCO captions json: gives the vocabulary size."),
        images: Path | None = typer.Option(
            None, "--images", metavar="DIR", help="Image folder of a json dataset (default: images/ beside the json)."),
        contract_name: str = typer.Option("caption-net-v1", "--contract", metavar="NAME", help="The contract to check."),
        image_size: int = typer.Option(_TASK["image_size"].default, "--image-size", help="Square input size in pixels."),
        max_len: int = typer.Option(_TASK["max_len"].default, "--max-len", help="Caption length, BOS and EOS included."),
        min_count: int = typer.Option(
            _TASK["min_count"].default, "--min-count", help="Minimum train-caption count for a word to enter the vocabulary."),
        max_params: int = typer.Option(_TASK["max_params"].default, "--max-params", help="Parameter budget."),
        max_latency_ms: float = typer.Option(
            _TASK["max_latency_ms"].default, "--max-latency-ms", help="Inference budget per image, in ms."),
        device: str = typer.Option("cpu", "--device", help="Where the probe runs: cpu or cuda."),
        seed: int = typer.Option(0, "--seed", help="Seed of the probe's synthetic data and of torch."),
        as_json: bool = typer.Option(
            False, "--json", help='Print {"ok", "violations", "params", "latency_ms"} as one JSON object.'),
    ) -> None:
        """Check FILE.py against the contract: static checks, then a probe in the sandbox.

        Exit status: 0 valid, 1 violations, 2 bad input (or no sandbox to run the probe in)."""
        from capnas.contracts import get_contract
        from capnas.sandbox import SandboxError, SandboxUnavailable
        from capnas.tools.data.datasets import DatasetError, VocabularyError
        from capnas.tools.jobs.validation import validate_code

        def fail(message: str) -> NoReturn:
            typer.echo(f"capnas validate: {message}", err=True)
            raise typer.Exit(2)

        try:
            source = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            fail(f"{file}: no such file")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{file}: cannot read it as UTF-8 text: {exc}")
        try:
            vocab_size = _vocabulary_size(dataset, images, min_count)
        except (DatasetError, VocabularyError) as exc:
            fail(f"dataset {dataset!r}: {exc}")
        try:
            contract = get_contract(contract_name, vocab_size=vocab_size, image_size=image_size, max_len=max_len,
                                    max_params=max_params, max_latency_ms=max_latency_ms)
        except KeyError as exc:
            fail(str(exc.args[0]))
        except ValueError as exc:
            fail(f"contract {contract_name}: {exc}")
        try:
            report = validate_code(source, contract, device, seed=seed)
        except (SandboxUnavailable, SandboxError) as exc:
            fail(f"{file}: the probe could not run: {exc}")

        if as_json:
            typer.echo(json.dumps(report.cli_json()))
        else:
            _print_report(file, source, contract.name, report)
        raise typer.Exit(0 if report.ok else 1)


def _vocabulary_size(spec: str, images: Path | None, min_count: int) -> int:
    """The vocabulary size training will see: built from the train captions, as `prepare_dataset` does."""
    from capnas.tools.data.datasets import DatasetError, Vocabulary, load_dataset

    data = load_dataset(spec, images)
    train = data.split("train")
    if not train:
        raise DatasetError(f"{data.source} has no train images; the vocabulary is built from them")
    return len(Vocabulary.build((c for item in train for c in item.captions), min_count=min_count))


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
