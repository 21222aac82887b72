"""The run-setting flags of `capnas run` and `capnas chat`, derived from `capnas.settings.RunSettings`: one
option per setting, with the setting's help text and default. Every flag defaults to None ("not given"), so a
config file's value stands unless a flag overrides it; `RunSettings.load` then checks the merged values."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from typing import Any, Callable, Literal, Optional

import typer

from capnas.settings import NO_FLAG, RunSettings, flag

# Flags whose off-form reads better than --no-X.
_BOOL_FLAGS = {"frozen_encoders": "--frozen-encoders/--trained-encoders"}


def _scalar(annotation: Any) -> tuple[type, str | None]:
    """(the Python type a flag parses to, a metavar) for a setting's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _scalar(args[0])
    if typing.get_origin(annotation) is Literal:
        return str, "|".join(map(str, typing.get_args(annotation)))
    if typing.get_origin(annotation) is list:
        return str, "A,B,..."
    if annotation in (int, float, bool, str):
        return annotation, None
    return str, None


def _default(key: str) -> str:
    info = RunSettings.model_fields[key]
    default = info.get_default(call_default_factory=True)
    return "" if default in (None, "", [], {}) else f" (default: {default})"


def setting_parameters(exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per run setting, as typer reads a command's signature."""
    params = []
    for key, info in RunSettings.model_fields.items():
        if key in NO_FLAG or key in exclude:
            continue
        kind, metavar = _scalar(info.annotation)
        decls = [_BOOL_FLAGS.get(key, f"{flag(key)}/--no-{flag(key)[2:]}")] if kind is bool else [flag(key)]
        option = typer.Option(None, *decls, metavar=metavar, show_default=False,
                              help=(info.description or "") + _default(key), rich_help_panel="Run settings")
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind]))
    return params


def with_settings(exclude: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command every run-setting flag: the decorated function receives them as one dict, `settings`
    (None where a flag was not given), beside its own parameters."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for name, p in inspect.signature(command).parameters.items() if name != "settings"]
        derived = setting_parameters(exclude)
        keys = {p.name for p in derived}

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            settings = {k: kwargs.pop(k) for k in list(kwargs) if k in keys}
            return command(settings=settings, **kwargs)

        # typer reads the signature and calls with keywords: every parameter can be keyword-only
        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + derived)
        return wrapper

    return decorate
