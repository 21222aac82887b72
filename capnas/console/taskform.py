"""The task the planner drafted, as a table a person confirms or edits with `key=value` (budgets flattened:
`max_candidates=3`, not `budgets.max_candidates=3`)."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from capnas.tools.task import Budgets, Task

TASK_KEYS = tuple(k for k in Task.model_fields if k != "budgets")
BUDGET_KEYS = tuple(Budgets.model_fields)
_SUFFIX = re.compile(r"^(\d+(?:\.\d+)?)([kKmM])$")  # 5M, 500k


class EditError(ValueError):
    """An edit that cannot be applied; the message names the key."""


def task_table(task: dict[str, Any], title: str = "Task", changed: dict[str, dict[str, Any]] | None = None) -> Table:
    """The task as rows of setting, value and meaning; with `changed` (a drafted task's fields and their evidence,
    `Drafted.evidence()`), an evidence column too: the person's words each changed value was read from, and the
    changed values in bold."""
    table = Table(title=title, title_justify="left", show_header=True, header_style="bold")
    table.add_column("setting", style="cyan", no_wrap=True)
    table.add_column("value", no_wrap=True)
    if changed is not None:
        table.add_column("from your words", style="green")
    table.add_column("meaning", style="dim")
    rows = [(k, task.get(k), Task.model_fields[k]) for k in TASK_KEYS] + \
           [(k, task.get("budgets", {}).get(k), Budgets.model_fields[k]) for k in BUDGET_KEYS]
    for key, value, info in rows:
        if changed is None:
            table.add_row(key, _show(value), info.description or "")
        else:
            said = changed.get(key)
            shown = escape(_show(value))
            words = "" if not said else "(set by you)" if said.get("source") == "person" else \
                escape(f"\u201c{said['evidence']}\u201d")
            table.add_row(key, f"[bold]{shown}[/bold]" if said else shown, words, info.description or "")
    return table


def edited(before: dict[str, Any], after: dict[str, Any], changed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The evidence after a person's `key=value` edit: a field they set is theirs ("edited"), the rest keep theirs."""
    old, new = _flat(before), _flat(after)
    out = {k: v for k, v in changed.items() if new.get(k) == old.get(k)}
    out.update({k: {"value": new[k], "evidence": "edited", "source": "person"} for k in new if new[k] != old[k]})
    return out


def _flat(task: dict[str, Any]) -> dict[str, Any]:
    return {**{k: task.get(k) for k in TASK_KEYS}, **dict(task.get("budgets", {}))}


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
