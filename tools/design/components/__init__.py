"""The component library: short PyTorch snippets for caption-net-v1 models.

Encoders map images float[B, 3, H, W] in [0, 1] to image tokens [B, N, out_dim]. Decoders take those tokens
and give teacher-forced logits (`forward(memory, inputs)`) and step-wise greedy generation
(`start(memory)`, then `step(prev_ids, state)`). `capnas.tools.design.archspec.render` inlines the chosen pair into
one candidate module; the coder agent shows k of `Component.source()` to an LLM as examples.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from capnas.tools.design.components.inline import SNIPPETS_DIR, read_snippet, standalone_source
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

Kind = Literal["encoder", "decoder"]


@dataclass(frozen=True)
class Component:
    name: str
    kind: Kind
    class_name: str  # the nn.Module the snippet defines
    snippet: str  # file stem under snippets/
    description: str  # one line
    options: type[BaseModel]  # its fields (except `name`) are the tunable options

    def source(self) -> str:
        """The snippet with its imports and any helper snippet it needs: self-contained PyTorch source."""
        return standalone_source(self.snippet)

    def tunable(self) -> dict[str, str]:
        """Option name -> 'choices or range (default): description', for prompts and reports."""
        described = {}
        for field_name, field in self.options.model_fields.items():
            if field_name == "name":
                continue
            described[field_name] = f"{space_of(field).describe()} (default {field.default!r}): {field.description}"
        return described

    def load(self) -> type:
        """Import the snippet's class (for tests and tools; candidates get the inlined source instead)."""
        module = importlib.import_module(f"{__name__}.snippets.{self.snippet}")
        return getattr(module, self.class_name)


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in [
        Component("small_cnn", "encoder", "SmallCNNEncoder", "small_cnn",
                  "Plain conv-BN-ReLU stack trained from scratch; cheap, good for small images.", SmallCNNOptions),
        Component("resnet", "encoder", "ResNetEncoder", "resnet",
                  "ResNet-style stack of basic residual blocks trained from scratch.", ResNetOptions),
        Component("vit", "encoder", "ViTEncoder", "vit",
                  "Patch-embedding vision transformer trained from scratch; one token per patch.", ViTOptions),
        Component("efficientnet_lite0", "encoder", "EfficientNetLite0Encoder", "efficientnet_lite0",
                  "ImageNet-pretrained EfficientNet-Lite0 (1280-d tokens, stride 32), frozen or fine-tuned.",
                  EfficientNetLite0Options),
        Component("lstm", "decoder", "LSTMDecoder", "lstm_decoder",
                  "LSTM initialised from the mean image token, optionally with additive attention per step.",
                  LSTMOptions),
        Component("gru", "decoder", "GRUDecoder", "gru_decoder",
                  "GRU initialised from the mean image token, optionally with additive attention per step.",
                  GRUOptions),
        Component("transformer", "decoder", "TransformerDecoder", "transformer_decoder",
                  "Causal transformer decoder cross-attending to the image tokens.", TransformerOptions),
    ]
}


def get_component(name: str) -> Component:
    try:
        return COMPONENTS[name]
    except KeyError:
        raise KeyError(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}") from None


def encoders() -> list[Component]:
    return [c for c in COMPONENTS.values() if c.kind == "encoder"]


def decoders() -> list[Component]:
    return [c for c in COMPONENTS.values() if c.kind == "decoder"]


__all__ = ["COMPONENTS", "SNIPPETS_DIR", "Component", "Kind", "decoders", "encoders", "get_component", "read_snippet"]
