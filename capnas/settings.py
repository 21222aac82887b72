"""Run settings: one flat view of every setting a run takes, derived from where each is declared.

Each setting is declared once, with its name, type, bounds, default and help, in the record that uses it:
- the task (`capnas.tools.task.Task` and its `Budgets`): what the run is asked to do;
- the runtime (`capnas.graph.context.Context`): how the graph runs it;
- the app (`AppSettings` below): the LLM endpoint and what only people pass (a requirement, a confirmation).
`RunSettings` copies those fields as they are. From it come the `capnas run` and `capnas chat` flags
(`capnas.commands.options`), the config-file keys, the README's table (a test keeps it in step) and, back
again, the `Task` and `Context` of a run. Adding a setting: one field in its record (plus its use).

`RunSettings.load` is the edge: a value is parsed and checked there, before any run, server or LLM starts,
and a bad one is a `SettingsError` naming the flag or key, the value and what is allowed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo

from capnas.agents.llm_config import AgentModels, LLMConfig
from capnas.graph.context import Context
from capnas.tools.task import Budgets, Task


class SettingsError(ValueError):
    """A config file or flag that cannot be used; the message names the file, flag or key."""


class AppSettings(BaseModel):
    """Settings only the application reads: which LLM serves the agents, and what a person passes."""

    requirement: str = Field("", description="what the person needs, in their words")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint; none: the embedded local model")
    llm_model: str | None = Field(None, description="model name at that endpoint")
    llm_api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    llm_timeout_s: float = Field(120.0, gt=0, description="seconds before an LLM request is retried")
    llm_max_retries: int = Field(2, ge=0, le=20, description="retries on 429, 5xx and timeouts (with backoff)")
    embedded_model: str = Field("qwen2.5-coder-0.5b", min_length=1,
                                description="local model served when no endpoint is given")
    baseline: Literal["random"] | None = Field(None, description="random: when the search ends, also search with "
                                                                   "random generation under the same budget, as a "
                                                                   "sibling run, and compare them")
    llm_roles: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                 description="per-role overrides, e.g. coder: {model: ...}")


# Which declared fields a run takes, in the order of `capnas run --help` and the README table.
TASK_KEYS = ("dataset", "images", "image_size", "max_len", "min_count", "max_params", "max_latency_ms", "objective",
             "families", "frozen_encoders")
BUDGET_KEYS = tuple(Budgets.model_fields)
CONTEXT_KEYS = ("generation", "concurrency", "executor", "ray_address", "device", "threads", "run_dir", "seed",
                "k_snippets", "max_repairs", "coder_tool_calls", "spec_tools", "critic_edits", "mutation",
                "inherit_weights")
APP_KEYS = tuple(AppSettings.model_fields)
# Renamed in the task record, so that the flag reads as English: `confirm` is Context.confirm_task.
CONFIRM_FIELD = ("confirm", Context.model_fields["confirm_task"])
# Settings whose value is never echoed in an error: a person may have pasted a key into them.
SECRET_BEARING = {"llm_roles"}
# Settings only a config file or the Python API sets (no flag): nested or people-only values.
NO_FLAG = {"llm_roles", "confirm"}


def _copied(model: type[BaseModel], keys: tuple[str, ...]) -> dict[str, tuple[Any, FieldInfo]]:
    return {k: (model.model_fields[k].annotation, copy.deepcopy(model.model_fields[k])) for k in keys}


def flag(key: str) -> str:
    """The command-line flag of a setting."""
    return "--" + key.replace("_", "-")


class _RunSettingsBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @classmethod
    def load(cls, config: Path | None, flags: dict[str, Any]) -> RunSettings:
        """Settings from a config file (YAML or JSON; keys as below, `-` or `_`) overridden by `flags` (None:
        not given). Raises SettingsError naming each bad flag or key with its value."""
        data = _read_config(config) if config is not None else {}
        given = {k: v for k, v in flags.items() if v is not None}
        data.update(given)
        try:
            settings = cls(**data)
            settings.task()  # the task's own checks: rules between fields, family names
            # the context's (the device's name), without choosing a device yet: that imports torch
            Context.model_validate({k: getattr(settings, k) for k in CONTEXT_KEYS}, context={"check_only": True})
        except ValidationError as err:
            raise SettingsError(_explain(err, config, given, data)) from None
        settings.check_dataset(lambda key: flag(key) if key in given else f"config file {config}: {key}")
        return settings

    @field_validator("families", "rungs", mode="before", check_fields=False)
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """`--families small_cnn,gru`, `--rungs 1,3,8` (and the same strings in a config file) are lists."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("llm_roles", check_fields=False)
    @classmethod
    def _roles_are_valid(cls, roles: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Per-role overrides are checked in every mode, against a stand-in default: a key pasted into
        `llm_roles.coder.api_key` is refused even by a run that serves the embedded model or none."""
        try:
            AgentModels(default=LLMConfig(model="stand-in"), roles=roles)
        except ValidationError as err:
            raise ValueError("; ".join(e["msg"].replace("Value error, ", "") for e in err.errors())) from None
        return roles

    def check_dataset(self, where=flag) -> None:
        """The dataset file and its image folder exist and read as a dataset (the same reader the run uses),
        so a typo fails here, not inside a run that `resume` could never finish."""
        from capnas.tools.data.sources import DatasetError, load_dataset

        if self.images is not None and not Path(self.images).expanduser().is_dir():
            raise SettingsError(f"{where('images')} {self.images!r}: no such folder")
        try:
            load_dataset(self.dataset, Path(self.images).expanduser() if self.images else None)
        except DatasetError as err:
            raise SettingsError(f"{where('dataset')} {self.dataset!r}: {err}") from None

    # -- the records of a run -------------------------------------------------------------------------
    def task(self) -> Task:
        fields = {k: getattr(self, k) for k in TASK_KEYS}
        return Task(**fields, budgets=Budgets(**{k: getattr(self, k) for k in BUDGET_KEYS}))

    def models(self) -> AgentModels | None:
        if self.llm_base_url is None and self.llm_model is None:
            return None
        default = LLMConfig(model=self.llm_model or "default", base_url=self.llm_base_url, api_key_env=self.llm_api_key_env,
                            timeout_s=self.llm_timeout_s, max_retries=self.llm_max_retries)
        return AgentModels(default=default, roles=self.llm_roles)

    def context(self, models: AgentModels | None) -> Context:
        """The run's Context. Models given while none are configured are the embedded local model's: the
        Context records which one, so `capnas resume` can serve it again (its port dies with the process)."""
        embedded = models is not None and self.models() is None
        return Context(**{k: getattr(self, k) for k in CONTEXT_KEYS}, models=models, confirm_task=self.confirm,
                       extra={"embedded_model": self.embedded_model} if embedded else {})


RunSettings = create_model(
    "RunSettings",
    __base__=_RunSettingsBase,
    __doc__="Every setting of a run, flat: the config file's keys and the flags of `capnas run`.",
    **_copied(Task, TASK_KEYS), **_copied(Budgets, BUDGET_KEYS), **_copied(Context, CONTEXT_KEYS),
    **_copied(AppSettings, APP_KEYS), confirm=(bool, copy.deepcopy(CONFIRM_FIELD[1])),
)


def _read_config(config: Path) -> dict[str, Any]:
    if not config.is_file():
        raise SettingsError(f"--config {config}: no such file")
    kind = "JSON" if config.suffix == ".json" else "YAML"
    try:
        text = config.read_text()
        data = (json.loads(text) if kind == "JSON" else yaml.safe_load(text)) or {}
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0]
        raise SettingsError(f"config file {config} is not valid {kind} ({first}); write one `key: value` per line") from None
    except OSError as err:
        raise SettingsError(f"config file {config} cannot be read: {err.strerror}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {config} must hold a mapping of settings (key: value), "
                            f"got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _explain(err: ValidationError, config: Path | None, flags: dict[str, Any], data: dict[str, Any]) -> str:
    """One line naming each bad value: the flag when it came from the command line, else the config key."""
    problems = []
    for e in err.errors():
        key = str(e["loc"][-1]) if e["loc"] else ""  # a Task or Budgets field has the same name as the setting
        if e["type"] == "extra_forbidden":
            known = ", ".join(k for k in RunSettings.model_fields)
            problems.append(f"config file {config}: unknown key {key!r}; known keys: {known}")
            continue
        if not key:  # a rule between settings: its message names them
            problems.append(f"{'config file ' + str(config) if config else 'settings'}: {_allowed(key, e)}")
            continue
        shown = "" if key in SECRET_BEARING else f" {data.get(key)!r}"  # may hold a pasted key: never echoed
        where = f"{flag(key)}{shown}" if key in flags else f"config file {config}: {key}{shown and ':' + shown}"
        problems.append(f"{where}: {_allowed(key, e)}")
    return "; ".join(problems)


def _allowed(key: str, e: dict[str, Any]) -> str:
    """Pydantic's message, with the allowed range spelled out for numbers."""
    if key in RunSettings.model_fields and e["type"] in ("greater_than_equal", "less_than_equal", "greater_than",
                                                         "less_than"):
        return "must be " + allowed(RunSettings, key)
    return e["msg"].removeprefix("Value error, ")


def show(value: Any) -> str:
    """A value as the person would have typed it: 0.5, 1e-06, 200, gpu7."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def field_bounds(model: type[BaseModel], name: str) -> tuple[tuple[Any, bool] | None, tuple[Any, bool] | None]:
    """(low, high) of field `name`, each (bound, inclusive) or None, from the annotated_types Ge/Gt/Le/Lt
    in the field's metadata."""
    low = high = None
    for item in model.model_fields[name].metadata:
        for attr, inclusive, is_low in (("ge", True, True), ("gt", False, True), ("le", True, False),
                                        ("lt", False, False)):
            bound = getattr(item, attr, None)
            if bound is not None:
                if is_low:
                    low = (bound, inclusive)
                else:
                    high = (bound, inclusive)
    return low, high


def allowed(model: type[BaseModel], name: str) -> str:
    """What field `name` of `model` allows, in words: "between 4 and 64", "greater than 0" ("" if unbounded)."""
    low, high = field_bounds(model, name)
    if low and high and low[1] and high[1]:
        return f"between {show(low[0])} and {show(high[0])}"
    parts = []
    if low:
        parts.append(f"at least {show(low[0])}" if low[1] else f"greater than {show(low[0])}")
    if high:
        parts.append(f"at most {show(high[0])}" if high[1] else f"less than {show(high[0])}")
    return " and ".join(parts)


def markdown_table() -> str:
    """The README's configuration table, made from the declarations (a test keeps the README equal to it):
    `python -c "from capnas.settings import markdown_table; print(markdown_table())"`."""
    rows = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for key, info in RunSettings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        where = "(config only)" if key in NO_FLAG else f"`{flag(key)}`"
        rows.append(f"| `{key}` | {where} | `{default!r}` | {info.description} |")
    return "\n".join(rows)
