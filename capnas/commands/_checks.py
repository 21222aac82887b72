"""Checks of command-line values at the edge, before a command starts anything.

A bad value ends the command with one line on stderr, `capnas train: --max-len 200: must be between 4 and 64`,
and exit status 2: no run, no cache, no sandbox, no server. The bounds are the declaration's
(`capnas.tools.task.Task` and `Budgets` fields), never restated here. Commands registered with
`cls=OneLineErrors` get the same one line for the errors typer and click find while parsing
(a missing option, a value that is not a number, an unknown choice) instead of a boxed usage panel.

Only typer is imported at module level (the rest inside the checks that need it): `capnas --help` stays fast.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from typer.core import TyperCommand

from capnas.settings import allowed, field_bounds, show

if TYPE_CHECKING:
    from pydantic import BaseModel

    from capnas.tools.data.datasets import CaptionDataset

# click's exceptions as typer raises them (recent typer releases bundle their own copy of click)
_click_exceptions = sys.modules[typer.BadParameter.__module__]
UsageError, MissingParameter = _click_exceptions.UsageError, _click_exceptions.MissingParameter

EXIT_USAGE = 2
DEVICE_HELP = "cpu, cuda or cuda:N"
_DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def fail(command: str, message: str, status: int = EXIT_USAGE) -> NoReturn:
    """`capnas COMMAND: MESSAGE` on stderr (one line), then exit with `status`."""
    typer.echo(f"capnas {command}: {one_line(message)}", err=True)
    raise typer.Exit(status)


def bounds_problem(model: type[BaseModel], name: str, value: Any) -> str | None:
    """What is wrong with `value` for field `name` of `model` ("must be between 4 and 64"), or None when it
    is within the field's declared bounds (or None: not given)."""
    if value is None:
        return None
    low, high = field_bounds(model, name)
    too_low = low is not None and (value < low[0] if low[1] else value <= low[0])
    too_high = high is not None and (value > high[0] if high[1] else value >= high[0])
    return "must be " + allowed(model, name) if too_low or too_high else None


def check_field(command: str, flag: str, value: Any, model: type[BaseModel], name: str | None = None) -> None:
    """Exit 2 with `capnas COMMAND: FLAG VALUE: must be ...` unless `value` fits `model`'s field `name`
    (default: the flag's name, `--max-len` -> `max_len`). None (not given) always fits."""
    problem = bounds_problem(model, name or flag.lstrip("-").replace("-", "_"), value)
    if problem:
        fail(command, f"{flag} {show(value)}: {problem}")


def check_device(command: str, device: str, flag: str = "--device", indexed: bool = True) -> str:
    """`cpu`, `cuda` or (with `indexed`) `cuda:N`, and a CUDA device only where one is (torch is imported
    only then)."""
    match = _DEVICE.fullmatch(device.strip())
    if not match or (match.group(1) is not None and not indexed):
        fail(command, f"{flag} {device}: must be {DEVICE_HELP if indexed else 'cpu or cuda'}")
    device = device.strip()
    if device != "cpu":
        import torch

        if not torch.cuda.is_available():
            fail(command, f"{flag} {device}: no CUDA device is available here; use --device cpu")
        index = match.group(1)
        if index is not None and int(index) >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            fail(command, f"{flag} {device}: this machine has {count} CUDA device{'s' * (count != 1)} "
                          f"(cuda:0..cuda:{count - 1})")
    return device


def check_file(command: str, path: Path, what: str = "file") -> None:
    if not path.exists():
        fail(command, f"{path}: no such {what}")
    if not path.is_file():
        fail(command, f"{path}: not a {what}")


def load_data(command: str, spec: str, images: Path | None) -> CaptionDataset:
    """The dataset of `--dataset SPEC` (and `--images DIR`), or exit 2 naming the flag and what is wrong. Reads
    the captions json and lists the image folder; writes nothing."""
    from capnas.tools.data.datasets import DatasetError, VocabularyError, load_dataset

    if images is not None and not images.is_dir():
        fail(command, f"--images {images}: {'not a folder' if images.exists() else 'no such folder'}")
    try:
        return load_dataset(spec, images)
    except (DatasetError, VocabularyError) as exc:
        fail(command, f"--dataset {spec}: {exc}")


def vocabulary_size(command: str, data: CaptionDataset, min_count: int, flag: str = "--min-count") -> int:
    """The vocabulary size training will see: built from the train captions, as `prepare_dataset` does."""
    from capnas.tools.data.datasets import Vocabulary, VocabularyError

    train = data.split("train")
    if not train:
        fail(command, f"--dataset {data.source}: no train images; the vocabulary is built from them")
    try:
        return len(Vocabulary.build((c for item in train for c in item.captions), min_count=min_count))
    except VocabularyError as exc:
        fail(command, f"{flag} {min_count}: {exc}")


def _command_path(ctx: Any, fallback: str) -> str:
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["capnas", *reversed(names)]) if names else f"capnas {fallback}"


def _given(args: list[str], opts: list[str]) -> str | None:
    """The value given on the command line for an option (`--epochs abc` or `--epochs=abc`; the last wins)."""
    value = None
    for i, arg in enumerate(args):
        for opt in opts:
            if opt.startswith("-") and arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif opt.startswith("--") and arg.startswith(opt + "="):
                value = arg[len(opt) + 1:]
    return value


class OneLineErrors(TyperCommand):
    """A typer command whose parse errors are one line, `capnas train: --epochs x: must be a valid integer, ...
    (see capnas train --help)`, with exit status 2, in place of typer's boxed usage panel. (Parse errors are
    raised in `make_context`, before the command's function runs.)"""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        given = list(args)  # parsing consumes the list
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except UsageError as exc:
            where = _command_path(getattr(exc, "ctx", None), info_name or self.name or "")
            param = getattr(exc, "param", None)
            if isinstance(exc, typer.BadParameter) and not isinstance(exc, MissingParameter) and param is not None:
                hint = exc.param_hint or " / ".join(getattr(param, "opts", None) or [param.name or "?"])
                if isinstance(hint, (list, tuple)):
                    hint = " / ".join(hint)
                hint = str(hint).replace("'", "")
                value = _given(given, getattr(param, "opts", None) or [])
                problem = re.sub(r"^Value error, ", "", str(exc.message)).replace("Input should be ", "must be ")
                message = f"{hint} {value}: {problem}" if value is not None else f"{hint}: {problem}"
            else:
                message = exc.format_message()
            typer.echo(f"{where}: {one_line(message).rstrip('.')} (see {where} --help)", err=True)
            raise typer.Exit(EXIT_USAGE) from None
