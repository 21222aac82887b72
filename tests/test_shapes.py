"""The synthetic shapes set: deterministic from its seed, and every caption says what was drawn."""

from __future__ import annotations

import pytest

from capnas.tools.data import shapes
from capnas.tools.data.datasets import DatasetError, load_dataset, shapes_dataset
from capnas.tools.data.vocab import tokenize

POSITION_WORDS = {"left": {"left"}, "right": {"right"}, "top": {"top"}, "bottom": {"bottom"}, "center": {"center", "middle"}}
SIZE_WORDS = {"small": {"small", "little"}, "large": {"large", "big"}}


def test_default_set_is_1200_images_split_80_10_10() -> None:
    dataset = load_dataset("shapes")
    assert dataset.split_sizes() == {"train": 960, "val": 120, "test": 120}
    assert [item.image_id for item in dataset.items] == list(range(1200))


def test_shapes_n_is_a_prefix_of_the_default_set() -> None:
    small = load_dataset("shapes:40")
    assert small.split_sizes() == {"train": 32, "val": 4, "test": 4}
    assert small.items == load_dataset("shapes").items[:40]
    assert small.fingerprint != load_dataset("shapes").fingerprint


def test_same_seed_same_images_and_captions_other_seed_differs() -> None:
    a, b, other = shapes_dataset(30, seed=0), shapes_dataset(30, seed=0), shapes_dataset(30, seed=1)
    assert a.items == b.items
    assert a.load_image(a.items[7], 64).tobytes() == b.load_image(b.items[7], 64).tobytes()
    assert [i.captions for i in a.items] != [i.captions for i in other.items]
    assert a.fingerprint != other.fingerprint


def test_scenes_are_pinned_across_runs() -> None:
    # String seeds hash with SHA-512, so this holds on every machine; if it changes, bump GENERATOR_VERSION.
    scene = shapes.make_scene(0, 2)
    assert [(s.kind, s.colour, s.size, s.position) for s in scene.shapes] == [("square", "blue", "small", "bottom")]
    assert scene.captions[0] == "a small blue square near the bottom"


def test_each_image_has_five_different_captions() -> None:
    for item in shapes_dataset(50).items:
        assert len(item.captions) == 5 and len(set(item.captions)) == 5


@pytest.mark.parametrize("index", range(0, 60, 3))
def test_captions_describe_what_was_drawn(index: int) -> None:
    scene = shapes.make_scene(0, index)
    image = shapes.render(scene, 96)
    drawn = set()
    for s in scene.shapes:
        x, y = s.centre(96)
        assert image.getpixel((int(x), int(y))) == shapes.COLOURS[s.colour], f"{s} is not drawn at its centre"
        drawn.add((s.kind, s.colour, s.position))
    assert 1 <= len(scene.shapes) <= 3

    for caption in scene.captions:
        # Each caption is one phrase per shape joined by "and"; each phrase names exactly one kind,
        # colour and position, and, when it names a size, the right one.
        described = set()
        for phrase in caption.split(" and "):
            words = set(tokenize(phrase))
            (kind,) = words & set(shapes.KINDS)
            (colour,) = words & set(shapes.COLOURS)
            (position,) = [p for p, names in POSITION_WORDS.items() if words & names]
            described.add((kind, colour, position))
            shape = next(s for s in scene.shapes if s.position == position)
            for size, names in SIZE_WORDS.items():
                if words & names:
                    assert shape.size == size, caption
        assert described == drawn, caption


def test_shapes_never_overlap() -> None:
    for index in range(200):
        scene = shapes.make_scene(0, index)
        boxes = []
        for s in scene.shapes:
            x, y = s.centre(1.0)
            r = shapes.RADII[s.size]
            boxes.append((x - r, y - r, x + r, y + r))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (index, scene.shapes)


def test_images_are_drawn_at_the_requested_size() -> None:
    dataset = shapes_dataset(10)
    image = dataset.load_image(dataset.items[0], 48)
    assert (image.mode, image.size) == ("RGB", (48, 48))
    assert dataset.load_image(dataset.items[0]).size == (128, 128)


def test_too_small_a_set_is_refused() -> None:
    with pytest.raises(DatasetError, match=r"'shapes:5' is too small.*N >= 10"):
        load_dataset("shapes:5")
