"""The built-in synthetic captioning set: 1 to 3 coloured shapes on a plain background.

Each image is a `Scene` drawn from `random.Random(f"shapes:{seed}:{index}")` (string seeds hash with
SHA-512, so scenes are the same on every machine and every run), and carries five captions in
different phrasings and word orders. Shapes sit at distinct positions and never overlap, so every
caption is unambiguous. Captions run from 6 to 26 words, so `max_len` 28 (BOS and EOS included) keeps
every one whole; with less, the encoder truncates them. A CNN+GRU learns the set on a CPU in minutes.
Bump `GENERATOR_VERSION` whenever a change here alters scenes or captions: it keys prepared caches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageDraw

GENERATOR_VERSION = 1
CAPTIONS_PER_IMAGE = 5

ShapeKind = Literal["circle", "square", "triangle"]
SizeName = Literal["small", "large"]
Position = Literal["left", "right", "top", "bottom", "center"]

KINDS: tuple[ShapeKind, ...] = ("circle", "square", "triangle")
SIZES: tuple[SizeName, ...] = ("small", "large")
POSITIONS: tuple[Position, ...] = ("left", "right", "top", "bottom", "center")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
}
BACKGROUND = (235, 235, 235)

# Centres and radii as fractions of the image side. Large shapes plus the jitter still leave a gap
# between neighbouring positions (left reaches 0.34 at most, center starts at 0.36).
CENTRES: dict[Position, tuple[float, float]] = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "center": (0.5, 0.5),
}
RADII: dict[SizeName, float] = {"small": 0.07, "large": 0.12}
JITTER = 0.02

SIZE_WORDS: dict[SizeName, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
POSITION_PHRASES: dict[Position, tuple[str, ...]] = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "center": ("in the center", "in the middle"),
}
COUNT_WORDS = {2: "two", 3: "three"}


@dataclass(frozen=True)
class Shape:
    kind: ShapeKind
    colour: str
    size: SizeName
    position: Position
    dx: float  # jitter of the centre, fraction of the image side
    dy: float

    def centre(self, side: int) -> tuple[float, float]:
        cx, cy = CENTRES[self.position]
        return (cx + self.dx) * side, (cy + self.dy) * side


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    captions: tuple[str, ...]


def make_scene(seed: int, index: int) -> Scene:
    """The scene and captions of image `index` of the set generated from `seed`."""
    rng = random.Random(f"shapes:{seed}:{index}")
    positions = rng.sample(POSITIONS, rng.randint(1, 3))
    shapes = tuple(
        Shape(
            kind=rng.choice(KINDS),
            colour=rng.choice(list(COLOURS)),
            size=rng.choice(SIZES),
            position=p,
            dx=rng.uniform(-JITTER, JITTER),
            dy=rng.uniform(-JITTER, JITTER),
        )
        for p in positions
    )
    frames = rng.sample(_FRAMES, CAPTIONS_PER_IMAGE)
    return Scene(shapes, tuple(frame(_shuffled(shapes, rng), rng) for frame in frames))


def render(scene: Scene, side: int) -> Image.Image:
    """Draw the scene as an RGB image of `side` x `side` pixels."""
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        cx, cy = shape.centre(side)
        r = RADII[shape.size] * side
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape.kind == "square":
            h = 0.85 * r  # a slightly smaller half-side keeps the area close to the circle's
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - 0.87 * r, cy + 0.5 * r), (cx + 0.87 * r, cy + 0.5 * r)], fill=fill)
    return image


# --- captions: each frame phrases the whole scene one way; five of them are drawn per image ---------


def _shuffled(shapes: tuple[Shape, ...], rng: random.Random) -> list[Shape]:
    order = list(shapes)
    rng.shuffle(order)
    return order


def _size(s: Shape, rng: random.Random) -> str:
    return rng.choice(SIZE_WORDS[s.size])


def _where(s: Shape, rng: random.Random) -> str:
    return rng.choice(POSITION_PHRASES[s.position])


def _plain(shapes: list[Shape], rng: random.Random) -> str:
    return " and ".join(f"a {_size(s, rng)} {s.colour} {s.kind} {_where(s, rng)}" for s in shapes)


def _there_is(shapes: list[Shape], rng: random.Random) -> str:
    return "there is " + _plain(shapes, rng)


def _place_first(shapes: list[Shape], rng: random.Random) -> str:
    first, *rest = shapes
    text = f"{_where(first, rng)} there is a {_size(first, rng)} {first.colour} {first.kind}"
    return " and ".join([text] + [f"{_where(s, rng)} a {_size(s, rng)} {s.colour} {s.kind}" for s in rest])


def _no_size(shapes: list[Shape], rng: random.Random) -> str:
    return " and ".join(f"a {s.colour} {s.kind} {_where(s, rng)}" for s in shapes)


def _attributes_last(shapes: list[Shape], rng: random.Random) -> str:
    return " and ".join(f"the {_size(s, rng)} {s.kind} {_where(s, rng)} is {s.colour}" for s in shapes)


def _counted(shapes: list[Shape], rng: random.Random) -> str:
    if len(shapes) == 1:
        s = shapes[0]
        return f"an image with a single {_size(s, rng)} {s.colour} {s.kind} {_where(s, rng)}"
    return f"{COUNT_WORDS[len(shapes)]} shapes, " + _plain(shapes, rng)


def _colour_after(shapes: list[Shape], rng: random.Random) -> str:
    return " and ".join(f"a {_size(s, rng)} {s.kind} in {s.colour} {_where(s, rng)}" for s in shapes)


_FRAMES = [_plain, _there_is, _place_first, _no_size, _attributes_last, _counted, _colour_after]
