"""Typed edits to an architecture spec: what the critic asks a refine to change, and what a mutation draws.

An edit is `{"field": ..., "value": ...}` over a flat view of `ArchSpec`:

- `encoder` / `decoder`: a component name (switches the family);
- `<component>.<option>`, e.g. `lstm.hidden_size`: one option of one component. An edit to a component the
  spec does not use switches to it first, so every edit the schema admits applies to every parent;
- the training fields (`lr`, `dropout`, `weight_decay`, `grad_clip`, `batch_size`, `epochs`).

`EditSpace` enumerates each field's allowed values from the component options (choices as they are, integer
ranges in full, float ranges as a short ladder of round values), and `edit_type()` turns that into a
pydantic union discriminated by `field`, so the JSON-schema grammar a local server builds from it only
admits valid edits. A family switch keeps the options both families share (gru -> lstm keeps hidden_size)
and gives the others their defaults.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Literal, Union

from pydantic import ConfigDict, create_model

from capnas.tools.design.archspec import ArchSpec, frozen
from capnas.tools.design.components import decoders, encoders, get_component
from capnas.tools.design.components.options import Space, space_of

TRAINING_FIELDS = ("dropout", "lr", "weight_decay", "grad_clip", "batch_size", "epochs")
# A mutation leaves `epochs` alone: the run's budgets, not the spec, decide how long a candidate trains.
NOT_MUTATED = frozenset({"epochs"})
MAX_EDITS = 4


def ladder(space: Space) -> tuple[Any, ...]:
    """The values an edit may give a field: its choices, every integer of an int range, or for a float range
    round values inside it (1-3-10 steps for log ranges, six even steps otherwise). A grammar can enumerate
    these; it cannot bound a float."""
    if space.choices:
        return tuple(space.choices)
    if space.integer:
        return tuple(range(int(space.low), int(space.high) + 1))
    if space.log:
        first, last = math.floor(math.log10(space.low)), math.ceil(math.log10(space.high))
        values = [m * 10.0**e for e in range(first, last + 1) for m in (1, 3)]
        return tuple(float(f"{v:.3g}") for v in values if space.low <= v <= space.high)
    step = (space.high - space.low) / 5
    return tuple(float(f"{space.low + i * step:.3g}") for i in range(6))


@dataclass(frozen=True)
class EditSpace:
    """The fields an edit may name and each one's values, for a task's allowed families (`families`: component
    names, none meaning all) and its `frozen_encoders` (then no edit unfreezes a pretrained encoder)."""

    families: tuple[str, ...] = ()
    frozen_encoders: bool = False

    @cached_property
    def components(self) -> tuple[str, ...]:
        """The encoder and decoder components edits may switch to (as `archspec.sample` draws them)."""
        allowed = [c for c in encoders() if c.name in self.families] or encoders()
        allowed += [c for c in decoders() if c.name in self.families] or decoders()
        return tuple(c.name for c in allowed)

    @cached_property
    def values(self) -> dict[str, tuple[Any, ...]]:
        """field -> its allowed values, in a stable order (the schema's and the mutation's)."""
        out: dict[str, tuple[Any, ...]] = {
            "encoder": tuple(n for n in self.components if get_component(n).kind == "encoder"),
            "decoder": tuple(n for n in self.components if get_component(n).kind == "decoder"),
        }
        for name in self.components:
            for option, info in get_component(name).options.model_fields.items():
                if option == "name" or (self.frozen_encoders and option == "freeze"):
                    continue
                out[f"{name}.{option}"] = ladder(space_of(info))
        for name in TRAINING_FIELDS:
            out[name] = ladder(space_of(ArchSpec.model_fields[name]))
        return out

    def problem(self, edit: Any) -> str | None:
        """Why `edit` (as received: any JSON) is outside this space, in one line; None when it is inside."""
        if not isinstance(edit, dict) or set(edit) != {"field", "value"}:
            return f"{edit!r} is not an edit: write {{\"field\": ..., \"value\": ...}}"
        name, value = edit["field"], edit["value"]
        if name not in self.values:
            return f"unknown field {name!r}; edit one of {', '.join(self.values)}"
        allowed = self.values[name]
        if not any(value == v and type(value) is type(v) or _same_number(value, v) for v in allowed):
            return f"{name} cannot be {value!r}; use one of {', '.join(repr(v) for v in allowed)}"
        return None

    def fields_of(self, spec: ArchSpec) -> list[str]:
        """The fields that can change `spec` within its families (its components' options and the training
        fields), plus the family switches where the task allows another family: what a mutation chooses from."""
        used = (spec.encoder.name, spec.decoder.name)
        return [f for f, values in self.values.items() if f not in NOT_MUTATED and len(values) > 1
                and ("." not in f or f.split(".")[0] in used)]


def _same_number(value: Any, allowed: Any) -> bool:
    """JSON has one number type: 0.001 and 1e-3 are one value, 1 and 1.0 too (but a bool is not a number)."""
    numbers = (int, float)
    return (isinstance(value, numbers) and isinstance(allowed, numbers) and not isinstance(value, bool)
            and not isinstance(allowed, bool) and math.isclose(value, allowed, rel_tol=1e-9))


@lru_cache(maxsize=32)
def edit_type(space: EditSpace) -> Any:
    """A pydantic type for one edit of `space`: a union of one model per field, each `value` a Literal of that
    field's values (JSON schema: `anyOf` of `const` field names with `enum` values). No discriminator mapping:
    each member admits exactly one field name anyway, and the mapping would double the schema's prompt tokens."""
    models = []
    for name, allowed in space.values.items():
        title = "Edit_" + name.replace(".", "_")
        models.append(create_model(title, __config__=ConfigDict(extra="forbid", frozen=True, json_schema_extra=_untitled),
                                   field=(Literal[name], ...), value=(Literal[allowed], ...)))  # type: ignore[valid-type]
    return Union[tuple(models)]  # noqa: UP007 - a union built at run time


def _untitled(schema: dict[str, Any]) -> None:
    """Drop the titles pydantic gives each edit model and its two properties: only prompt tokens to a model."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


def _as_pair(edit: Any) -> tuple[str, Any]:
    return (edit["field"], edit["value"]) if isinstance(edit, dict) else (edit.field, edit.value)


def _switch(part: dict[str, Any], name: str) -> dict[str, Any]:
    """A component's options after switching to component `name`: the shared options carried over where the
    new component admits their value, the others at their defaults."""
    if part["name"] == name:
        return dict(part)
    options = get_component(name).options
    kept = {k: v for k, v in part.items()
            if k != "name" and k in options.model_fields and v in ladder(space_of(options.model_fields[k]))}
    return {"name": name, **kept}


def apply_edits(spec: ArchSpec, edits: Iterable[Any], space: EditSpace | None = None) -> ArchSpec:
    """`spec` with `edits` applied in order (a later edit of the same field wins). Every edit of the space's
    schema applies; `frozen_encoders` keeps a pretrained encoder frozen whatever the edits say."""
    data = spec.model_dump()
    for edit in edits:
        name, value = _as_pair(edit)
        if name in ("encoder", "decoder"):
            data[name] = _switch(data[name], value)
        elif "." in name:
            component, option = name.split(".", 1)
            kind = get_component(component).kind
            data[kind] = {**_switch(data[kind], component), option: value}
        else:
            data[name] = value
    child = ArchSpec(**data)
    return frozen(child) if space is not None and space.frozen_encoders else child


def flatten(spec: ArchSpec | dict) -> dict[str, Any]:
    """The spec as edit fields -> values (`encoder`, `lstm.hidden_size`, `lr`, ...)."""
    spec = spec if isinstance(spec, ArchSpec) else ArchSpec(**spec)
    out: dict[str, Any] = {"encoder": spec.encoder.name, "decoder": spec.decoder.name}
    for part in (spec.encoder, spec.decoder):
        out.update({f"{part.name}.{k}": v for k, v in part.kwargs().items()})
    out.update({name: getattr(spec, name) for name in TRAINING_FIELDS})
    return out


def diff(parent: ArchSpec | dict, child: ArchSpec | dict) -> list[tuple[str, Any, Any]]:
    """(field, parent's value, child's value) for every field that differs; a field the parent's families do
    not have reads as None on its side (a family switch lists the new family's options)."""
    before, after = flatten(parent), flatten(child)
    return [(k, before.get(k), v) for k, v in after.items() if before.get(k) != v]


def describe_diff(changes: Sequence[tuple[str, Any, Any]]) -> str:
    """'lstm.hidden_size 512->256, lr 0.001->0.0003' (or 'no change')."""
    return ", ".join(f"{k} {old!r}->{new!r}" if old is not None else f"{k}={new!r}"
                     for k, old, new in changes) or "no change"


def mutate(spec: ArchSpec, rng: random.Random, space: EditSpace) -> tuple[ArchSpec, list[dict[str, Any]]]:
    """Regularized evolution's mutation: one or two fields of `spec` (its families' options, the training fields
    but `epochs`, or a family switch) set to another of their allowed values. Returns (child, the edits made)."""
    current = flatten(spec)
    fields = space.fields_of(spec)
    chosen = rng.sample(fields, k=min(len(fields), rng.choice((1, 2))))
    edits = []
    for name in chosen:
        others = [v for v in space.values[name] if v != current.get(name)]
        if others:
            edits.append({"field": name, "value": rng.choice(others)})
    return apply_edits(spec, edits, space), edits


__all__ = ["MAX_EDITS", "TRAINING_FIELDS", "EditSpace", "apply_edits", "describe_diff", "diff", "edit_type",
           "flatten", "ladder", "mutate"]
