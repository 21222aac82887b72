"""The task the planner drafted, as a table a person confirms or edits with `key=value` (budgets flattened:
`max_candidates=3`, not `budgets.max_candidates=3`)."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml
from pydantic import ValidationError
from rich.table import Table

from capnas.tools.task import Budgets, Task

TASK_KEYS = tuple(k for k in Task.model_fields if k != "budgets")
BUDGET_KEYS = tuple(Budgets.model_fields)
_SUFFIX = re.compile(r"^(\d+(?:\.\d+)?)([kKmM])$")  # 5M, 500k


class EditError(ValueError):
    """An edit that cannot be applied; the message names the key."""


def task_table(task: dict[str, Any], title: str = "Task") -> Table:
    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    table.add_column("setting", style="cyan", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column("meaning", style="dim")
    for key in TASK_KEYS:
        table.add_row(key, _show(task.get(key)), Task.model_fields[key].description or "")
    for key in BUDGET_KEYS:
        table.add_row(key, _show(task.get("budgets", {}).get(key)), Budgets.model_fields[key].description or "")
    return table


def _show(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def parse_value(key: str, text: str) -> Any:
    """`5M` -> 5000000, `a,b` -> a list for `families`, `none` -> None, else YAML scalars (`3`, `0.5`, `cider`)."""
    if key == "families":
        return [part.strip() for part in text.split(",") if part.strip()]
    if match := _SUFFIX.match(text):
        number = float(match[1]) * (1_000_000 if match[2] in "mM" else 1_000)
        return int(number) if number.is_integer() else number
    if text.lower() in ("none", "null", "-"):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, str, bool)) else text


def apply_edits(task: dict[str, Any], line: str) -> dict[str, Any]:
    """The task with the `key=value` pairs of `line` applied and validated; raises EditError naming the key."""
    try:
        pairs = shlex.split(line)
    except ValueError as err:
        raise EditError(f"cannot read {line!r}: {err}") from None
    data = {**task, "budgets": dict(task.get("budgets", {}))}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().removeprefix("budgets.")
        if not sep or not key:
            raise EditError(f"{pair!r} is not key=value (e.g. max_params=2M, max_candidates=3)")
        if key in TASK_KEYS:
            data[key] = parse_value(key, text.strip())
        elif key in BUDGET_KEYS:
            data["budgets"][key] = parse_value(key, text.strip())
        else:
            raise EditError(f"unknown setting {key!r}; known: {', '.join(TASK_KEYS + BUDGET_KEYS)}")
    try:
        return Task(**data).model_dump()
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).removeprefix('budgets.')}: {e['msg']}"
                             for e in err.errors(include_url=False))
        raise EditError(problems) from None
