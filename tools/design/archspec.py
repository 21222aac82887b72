"""Architecture specs: a typed description of one caption-net-v1 model, rendered into code from the components.

`ArchSpec` is what the coder fills in `spec` mode (a forced tool call against `ArchSpec.model_json_schema()`),
`sample(rng)` draws one uniformly from the same space for the `random` baseline, and `render(spec)` writes a
self-contained candidate module: the chosen snippets inlined, two builder functions holding the spec's
choices, and the caption-net-v1 glue. The rendered text never imports capnas.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from capnas.tools.design.components import Component, decoders, encoders, get_component
from capnas.tools.design.components.inline import check_no_clashes, import_block, resolve
from capnas.tools.design.components.options import (
    EfficientNetLite0Options,
    GRUOptions,
    LSTMOptions,
    ResNetOptions,
    SmallCNNOptions,
    TransformerOptions,
    ViTOptions,
    space_of,
)

EncoderSpec = Annotated[
    SmallCNNOptions | ResNetOptions | ViTOptions | EfficientNetLite0Options, Field(discriminator="name")
]
DecoderSpec = Annotated[LSTMOptions | GRUOptions | TransformerOptions, Field(discriminator="name")]

# The names the rendered `Net` reads from `prm` (its `supported_hyperparameters()`).
HYPERPARAMETERS = ("lr", "weight_decay", "grad_clip", "dropout")
GLUE_SNIPPET = "caption_net"


class ArchSpec(BaseModel):
    """One image-captioning model: an encoder, a decoder, their options, and how to train it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: EncoderSpec = Field(description="image encoder and its options; `name` picks the component")
    decoder: DecoderSpec = Field(description="caption decoder and its options; `name` picks the component")
    dropout: float = Field(0.3, ge=0.0, le=0.5, description="decoder dropout")
    lr: float = Field(1e-3, ge=1e-5, le=1e-2, json_schema_extra={"log": True},
                      description="AdamW learning rate (1e-3 suits the recurrent decoders; transformers often 3e-4)")
    weight_decay: float = Field(0.01, ge=0.0, le=0.1, description="AdamW weight decay")
    grad_clip: float = Field(5.0, ge=0.5, le=10.0, description="gradient norm clipping threshold")
    batch_size: Literal[8, 16, 32, 64, 128] = Field(32, description="images per batch, each with all its captions")
    epochs: int = Field(10, ge=1, le=30, description="passes over the training split")

    def prm(self) -> dict[str, float]:
        """The hyperparameters the rendered model reads from `prm` (the task adds `max_len`)."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS}

    def describe(self) -> str:
        """One line, e.g. 'efficientnet_lite0(freeze=True) + lstm(embed_dim=256, ...)'."""

        def part(options: BaseModel) -> str:
            kwargs = ", ".join(f"{k}={v!r}" for k, v in options.kwargs().items())
            return f"{options.name}({kwargs})"

        return f"{part(self.encoder)} + {part(self.decoder)}"


def spec_model(encoder: str, decoder: str, frozen: bool = False) -> type[ArchSpec]:
    """`ArchSpec` with the encoder and decoder families fixed: the schema the coder fills when the planner has
    assigned a candidate its families (the model then chooses only their options and the training fields).
    `frozen` fixes `freeze` to true for an encoder that has it. Parse with it, then `ArchSpec(**answer.model_dump())`."""
    enc, dec = get_component(encoder).options, get_component(decoder).options
    if frozen and "freeze" in enc.model_fields:
        enc = create_model(enc.__name__, __base__=enc, freeze=(Literal[True], Field(
            True, description="the task keeps the pretrained backbone frozen")))
    return create_model("ArchSpec", __base__=ArchSpec, __doc__=ArchSpec.__doc__,
                        encoder=(enc, Field(description=f"options of the {encoder} encoder")),
                        decoder=(dec, Field(description=f"options of the {decoder} decoder")))


def families(spec: ArchSpec | dict) -> tuple[str, str]:
    """(encoder, decoder) names of a spec, or of its JSON form."""
    if isinstance(spec, dict):
        return spec["encoder"]["name"], spec["decoder"]["name"]
    return spec.encoder.name, spec.decoder.name


def frozen(spec: ArchSpec) -> ArchSpec:
    """`spec` with its encoder frozen when the encoder has a `freeze` option (a task's `frozen_encoders`)."""
    if getattr(spec.encoder, "freeze", True):  # already frozen, or nothing pretrained to freeze
        return spec
    return spec.model_copy(update={"encoder": spec.encoder.model_copy(update={"freeze": True})})


def sample(rng: random.Random, families: Sequence[str] = ()) -> ArchSpec:
    """A random spec: encoder and decoder families uniformly, then every option and training field uniformly over
    its declared space (log-uniformly for lr). Deterministic for a seeded `rng`. `families` (component names)
    keeps the draw inside them: encoders among those named, if any, and decoders likewise."""

    def draw(model: type[BaseModel], skip: set[str]) -> dict:
        return {name: space_of(field).sample(rng) for name, field in model.model_fields.items() if name not in skip}

    encoder = rng.choice([c for c in encoders() if c.name in families] or encoders()).options
    decoder = rng.choice([c for c in decoders() if c.name in families] or decoders()).options
    return ArchSpec(
        encoder=encoder(**draw(encoder, {"name"})),
        decoder=decoder(**draw(decoder, {"name"})),
        **draw(ArchSpec, {"encoder", "decoder"}),
    )


def render(spec: ArchSpec) -> str:
    """The caption-net-v1 module for `spec`: one self-contained Python source text."""
    encoder, decoder = get_component(spec.encoder.name), get_component(spec.decoder.name)
    snippets = resolve([encoder.snippet, decoder.snippet, GLUE_SNIPPET])
    check_no_clashes(snippets)
    *components, glue = snippets
    docstring = (
        f'"""caption-net-v1 model: {spec.describe()}.\n\n'
        "Rendered by capnas from this architecture spec; change the spec and render again instead of editing.\n\n"
        f'spec: {spec.model_dump_json()}\n"""\n'
    )
    sections = [docstring + "\n" + import_block(snippets)]
    for snippet in components:
        sections.append(_banner(snippet.name) + snippet.body)
    sections.append(_banner("architecture chosen by the spec") + _builders(spec, encoder, decoder))
    sections.append(_banner("caption-net-v1 glue") + glue.body)
    return "\n\n".join(sections)


def _banner(title: str) -> str:
    return f"# ---- {title} {'-' * max(4, 92 - len(title))}\n"


def _builders(spec: ArchSpec, encoder: Component, decoder: Component) -> str:
    def call(class_name: str, options: BaseModel, leading: tuple[str, ...] = (), trailing: tuple[str, ...] = ()):
        args = [*leading, *(f"{k}={v!r}" for k, v in options.kwargs().items()), *trailing]
        return f"{class_name}({', '.join(args)})"

    encoder_call = call(encoder.class_name, spec.encoder)
    decoder_call = call(decoder.class_name, spec.decoder, ("feat_dim", "vocab_size"), ("dropout=dropout",))
    return (
        "def build_encoder():\n"
        f"    return {encoder_call}\n\n\n"
        "def build_decoder(feat_dim, vocab_size, dropout):\n"
        f"    return {decoder_call}\n"
    )


__all__ = ["HYPERPARAMETERS", "ArchSpec", "DecoderSpec", "EncoderSpec", "families", "frozen", "render", "sample",
           "spec_model"]
