"""The tunable options of each component, as pydantic models: field names are the snippet class's keyword
arguments, defaults are its defaults, and the declared choices and ranges are the search space that
`capnas.tools.design.archspec` validates, samples from and offers to the coder as a JSON schema."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Space:
    """The values one field may take: a set of choices, or a closed numeric range (log-scaled if `log`)."""

    choices: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0
    integer: bool = False
    log: bool = False

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        kind = "int" if self.integer else "log-scaled float" if self.log else "float"
        return f"{kind} in [{self.low:g}, {self.high:g}]"

    def sample(self, rng: random.Random) -> Any:
        """A uniform draw (log-uniform for log ranges); floats keep 3 significant digits, to stay readable."""
        if self.choices:
            return rng.choice(self.choices)
        if self.integer:
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return min(max(float(f"{value:.3g}"), self.low), self.high)


def space_of(field: FieldInfo) -> Space:
    """Read a field's space from its annotation: Literal choices, bool, or int/float with ge/le bounds."""
    if get_origin(field.annotation) is Literal:
        return Space(choices=get_args(field.annotation))
    if field.annotation is bool:
        return Space(choices=(False, True))
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    if low is None or high is None:
        raise TypeError(f"field {field.alias or field.title or field} has no Literal choices and no ge/le range")
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return Space(low=low, high=high, integer=field.annotation is int, log=bool(extra.get("log")))


Grid = Annotated[Literal[4, 7, 14], Field(description="the token map is average-pooled to at most grid x grid tokens")]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def kwargs(self) -> dict:
        """Constructor keyword arguments: every option but the component name."""
        return self.model_dump(exclude={"name"})


class SmallCNNOptions(_Options):
    name: Literal["small_cnn"] = "small_cnn"
    width: Literal[16, 32, 64] = Field(32, description="channels of the first stage; each stage doubles them")
    depth: int = Field(3, ge=2, le=4, description="number of stride-2 stages")
    grid: Grid = 7


class ResNetOptions(_Options):
    name: Literal["resnet"] = "resnet"
    width: Literal[16, 32, 64] = Field(32, description="channels of the first stage; each later stage doubles them")
    blocks: int = Field(2, ge=1, le=3, description="basic residual blocks per stage")
    stages: int = Field(3, ge=3, le=4, description="number of stages (all but the first halve the resolution)")
    grid: Grid = 7


class ViTOptions(_Options):
    name: Literal["vit"] = "vit"
    patch_size: Literal[8, 16, 32] = Field(16, description="side of the square patches, in pixels")
    dim: Literal[64, 128, 192, 256] = Field(128, description="token width")
    depth: int = Field(2, ge=1, le=6, description="transformer encoder layers")
    heads: Literal[2, 4, 8] = Field(4, description="attention heads (dim is divisible by each choice)")


class EfficientNetLite0Options(_Options):
    name: Literal["efficientnet_lite0"] = "efficientnet_lite0"
    freeze: bool = Field(True, description="keep the ImageNet-pretrained backbone fixed (no gradients, eval BatchNorm)")


# The LSTM and GRU decoders share their options.
EmbedDim = Annotated[Literal[128, 256, 512], Field(description="word embedding size")]
HiddenSize = Annotated[Literal[128, 256, 512, 1024], Field(description="recurrent state size")]
RecurrentLayers = Annotated[int, Field(ge=1, le=2, description="stacked recurrent layers")]
Attention = Annotated[bool, Field(description="additive attention over the image tokens at every step")]


class LSTMOptions(_Options):
    name: Literal["lstm"] = "lstm"
    embed_dim: EmbedDim = 256
    hidden_size: HiddenSize = 512
    num_layers: RecurrentLayers = 1
    attention: Attention = True


class GRUOptions(_Options):
    name: Literal["gru"] = "gru"
    embed_dim: EmbedDim = 256
    hidden_size: HiddenSize = 512
    num_layers: RecurrentLayers = 1
    attention: Attention = True


class TransformerOptions(_Options):
    name: Literal["transformer"] = "transformer"
    d_model: Literal[128, 256, 512] = Field(256, description="token width (also the word embedding size)")
    num_layers: int = Field(2, ge=1, le=4, description="decoder layers")
    heads: Literal[2, 4, 8] = Field(4, description="attention heads (d_model is divisible by each choice)")
