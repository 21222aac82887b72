"""The prepared cache: tensors and layout, reuse without decoding, keying, atomic writes, the sandbox reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capnas.sandbox import prepared
from capnas.tools.data.caption_dataset import CaptionDataset
from capnas.tools.data.datasets import (
    BOS, EOS, PAD, DatasetError, Vocabulary, cache_root_default, load_dataset, prepare_dataset, tokenize,
)  # fmt: skip


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, item, size=None):
        raise AssertionError(f"image {item.filename} was decoded although the cache should be reused")

    monkeypatch.setattr(CaptionDataset, "load_image", refuse)


def test_shapes_cache_is_built_once_then_reused(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = load_dataset("shapes:40")
    first = prepare_dataset(dataset, image_size=32, max_len=28, min_count=1, cache_root=cache_root)
    assert (first.built, first.decoded) == (True, 40)

    _no_decoding(monkeypatch)
    again = prepare_dataset(load_dataset("shapes:40"), image_size=32, max_len=28, min_count=1, cache_root=cache_root)
    assert (again.built, again.decoded) == (False, 0)
    assert again.dir == first.dir and again.vocab == first.vocab
    assert [p.name for p in cache_root.iterdir() if p.suffix != ".lock"] == [first.dir.name]  # no partial leftovers


def test_shapes_cache_holds_the_contract_tensors(cache_root: Path) -> None:
    dataset = load_dataset("shapes:40")
    ready = prepare_dataset(dataset, image_size=32, max_len=28, min_count=1, cache_root=cache_root)
    assert ready.split_sizes == {"train": 32, "val": 4, "test": 4}
    assert sorted(p.name for p in ready.dir.iterdir()) == [
        "meta.json", "sandbox_view", "test.captions.npy", "test.image_ids.npy", "test.images.npy",
        "train.captions.npy", "train.image_ids.npy", "train.images.npy",
        "val.captions.npy", "val.image_ids.npy", "val.images.npy", "vocab.json",
    ]  # fmt: skip

    val = ready.load_split("val")
    assert val.images.dtype == torch.uint8 and val.images.shape == (4, 3, 32, 32)
    assert val.captions.dtype == torch.int64 and val.captions.shape == (4, 5, 28)
    assert val.image_ids == [8, 18, 28, 38]
    item = dataset.split("val")[1]
    drawn = np.asarray(dataset.load_image(item, 32)).transpose(2, 0, 1)  # shapes are drawn at the size itself
    assert torch.equal(val.images[1], torch.from_numpy(drawn.copy()))
    for k, caption in enumerate(item.captions):
        row = val.captions[1, k]
        assert row[0] == BOS and (row == EOS).sum() == 1
        assert ready.vocab.decode(row.tolist()) == " ".join(tokenize(caption))
        assert torch.all(row[row.tolist().index(EOS) + 1 :] == PAD)

    meta = prepared.read_meta(ready.dir)
    assert meta["vocab_size"] == len(ready.vocab) and meta["max_len"] == 28 and meta["image_size"] == 32
    assert Vocabulary.load(ready.dir / prepared.VOCAB_FILE) == ready.vocab


def test_split_loads_memory_mapped(cache_root: Path) -> None:
    ready = prepare_dataset(load_dataset("shapes:20"), image_size=16, max_len=10, min_count=1, cache_root=cache_root)
    mapped, loaded = ready.load_split("train", mmap=True), ready.load_split("train", mmap=False)
    assert torch.equal(mapped.images, loaded.images) and torch.equal(mapped.captions, loaded.captions)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the file is mapped into this process rather than read into fresh memory
        assert str(ready.dir / "train.images.npy") in maps.read_text()
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        ready.load_split("dev")


def test_each_setting_gets_its_own_cache(cache_root: Path) -> None:
    dataset = load_dataset("shapes:20")
    base = prepare_dataset(dataset, image_size=16, max_len=10, min_count=1, cache_root=cache_root)
    others = [
        prepare_dataset(dataset, image_size=24, max_len=10, min_count=1, cache_root=cache_root),
        prepare_dataset(dataset, image_size=16, max_len=12, min_count=1, cache_root=cache_root),
        prepare_dataset(dataset, image_size=16, max_len=10, min_count=2, cache_root=cache_root),
        prepare_dataset(load_dataset("shapes:30"), image_size=16, max_len=10, min_count=1, cache_root=cache_root),
    ]
    assert all(o.built for o in others)
    assert len({base.dir, *(o.dir for o in others)}) == 5


def test_karpathy_cache_reused_and_rebuilt_when_an_image_changes(
    make_karpathy, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_karpathy()
    first = prepare_dataset(load_dataset(str(path)), image_size=24, max_len=12, min_count=1, cache_root=cache_root)
    assert (first.built, first.decoded) == (True, 10)
    train = first.load_split("train")
    assert train.images.shape == (6, 3, 24, 24)
    assert tuple(train.images[2, :, 12, 12].tolist()) == (40, 90, 200)  # image 2 is solid (40, 90, 200)

    with monkeypatch.context() as m:
        _no_decoding(m)
        again = prepare_dataset(load_dataset(str(path)), image_size=24, max_len=12, min_count=1, cache_root=cache_root)
        assert (again.built, again.decoded, again.dir) == (False, 0, first.dir)

    Image.new("RGB", (9, 9), (1, 2, 3)).save(path.parent / "images" / "img04.png")
    changed = prepare_dataset(load_dataset(str(path)), image_size=24, max_len=12, min_count=1, cache_root=cache_root)
    assert changed.built and changed.dir != first.dir


def test_vocabulary_comes_from_train_captions_only(make_karpathy, cache_root: Path) -> None:
    path = make_karpathy()
    data = json.loads(path.read_text())
    data["images"][7]["sentences"][0]["raw"] = "a zebra only in val"
    path.write_text(json.dumps(data))
    ready = prepare_dataset(load_dataset(str(path)), image_size=16, max_len=12, min_count=1, cache_root=cache_root)
    assert "zebra" not in ready.vocab.words
    assert "picture" in ready.vocab.words
    assert "5" in ready.vocab.words and "7" not in ready.vocab.words  # image numbers: 0-5 train, 6-9 val/test


@pytest.mark.parametrize(("given", "expected"), [(2, [0, 1, 0, 1, 0]), (7, [0, 1, 2, 3, 4])])
def test_captions_are_cut_or_repeated_to_five(make_karpathy, cache_root: Path, given: int, expected: list[int]) -> None:
    path = make_karpathy(captions_per_image=given)
    ready = prepare_dataset(load_dataset(str(path)), image_size=16, max_len=12, min_count=1, cache_root=cache_root)
    rows = ready.load_split("test").captions[0]
    assert [ready.vocab.decode(r.tolist()) for r in rows] == [f"a picture number <unk> version {j}" for j in expected]  # 8: test-only word


def test_crash_mid_build_leaves_no_cache(make_karpathy, cache_root: Path) -> None:
    path = make_karpathy()
    (path.parent / "images" / "img08.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match=rf"cannot decode image {path.parent / 'images' / 'img08.png'}"):
        prepare_dataset(load_dataset(str(path)), image_size=16, max_len=12, min_count=1, cache_root=cache_root)
    assert [p.name for p in cache_root.iterdir() if p.suffix != ".lock"] == []

    Image.new("RGB", (9, 9)).save(path.parent / "images" / "img08.png")
    assert prepare_dataset(load_dataset(str(path)), image_size=16, max_len=12, min_count=1, cache_root=cache_root).built


def test_flickr8k_subset_prepares_and_is_reused(
    flickr8k_dir: Path, tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = json.loads((flickr8k_dir / "dataset_flickr8k.json").read_text())
    subset = [e for e in full["images"] if e["split"] == "train"][:6] + [e for e in full["images"] if e["split"] == "val"][:2]
    subset += [e for e in full["images"] if e["split"] == "test"][:2]
    path = tmp_path / "dataset_flickr10.json"
    path.write_text(json.dumps({"dataset": "flickr10", "images": subset}))

    dataset = load_dataset(str(path), images=flickr8k_dir / "images")
    first = prepare_dataset(dataset, image_size=32, max_len=16, min_count=1, cache_root=cache_root)
    assert (first.built, first.decoded) == (True, 10)
    assert first.load_split("train").images.shape == (6, 3, 32, 32)
    _no_decoding(monkeypatch)
    again = prepare_dataset(load_dataset(str(path), images=flickr8k_dir / "images"), 32, 16, 1, cache_root)
    assert (again.built, again.decoded) == (False, 0)


def test_default_cache_root_follows_capnas_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CAPNAS_CACHE", str(tmp_path / "c"))
    assert cache_root_default() == tmp_path / "c" / "prepared"
    monkeypatch.delenv("CAPNAS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root_default() == tmp_path / "xdg" / "capnas" / "prepared"


def test_bad_sizes_are_refused(cache_root: Path) -> None:
    dataset = load_dataset("shapes:10")
    with pytest.raises(DatasetError, match="max_len must be >= 3"):
        prepare_dataset(dataset, image_size=16, max_len=2, cache_root=cache_root)
    with pytest.raises(DatasetError, match="image_size must be >= 8"):
        prepare_dataset(dataset, image_size=4, max_len=8, cache_root=cache_root)


# --- capnas.sandbox.prepared: the reader the sandboxed harness uses ----------------------------------


def test_sandbox_view_holds_no_reference_captions_of_val_or_test(cache_root: Path) -> None:
    ready = prepare_dataset(load_dataset("shapes:20"), image_size=16, max_len=10, min_count=1, cache_root=cache_root)
    view = ready.sandbox_dir
    assert sorted(p.name for p in view.iterdir()) == [
        "meta.json", "test.image_ids.npy", "test.images.npy", "train.captions.npy", "train.image_ids.npy",
        "train.images.npy", "val.image_ids.npy", "val.images.npy", "vocab.json",
    ]  # fmt: skip
    assert (view / "val.images.npy").stat().st_ino == (ready.dir / "val.images.npy").stat().st_ino  # linked, not copied
    assert torch.equal(prepared.load_split(view, "train").captions, ready.load_split("train").captions)
    assert prepared.load_images(view, "val").shape == (2, 3, 16, 16)
    assert prepared.load_image_ids(view, "test") == [9, 19]
    with pytest.raises(prepared.PreparedFormatError, match=rf"{view / 'val.captions.npy'} does not exist"):
        prepared.load_captions(view, "val")
    # Sandboxed jobs run as another uid: everything must be readable by all.
    for path in [ready.dir, view, *ready.dir.iterdir(), *view.iterdir()]:
        assert path.stat().st_mode & 0o004, path


def test_split_round_trip(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    captions = torch.randint(0, 9, (3, 5, 6), dtype=torch.int64)
    prepared.save_split(tmp_path, "train", images, captions, [7, 8, 9])
    split = prepared.load_split(tmp_path, "train")
    assert torch.equal(split.images, images) and torch.equal(split.captions, captions)
    assert split.image_ids == [7, 8, 9] and len(split) == 3


def test_wrong_arrays_are_refused_naming_the_file(tmp_path: Path) -> None:
    images_path = tmp_path / "train.images.npy"
    with pytest.raises(prepared.PreparedFormatError, match=rf"{images_path}: images must be uint8 \[N, 3, S, S\]"):
        prepared.save_split(tmp_path, "train", torch.zeros(2, 3, 8, 8), torch.zeros(2, 5, 6, dtype=torch.int64), [1, 2])
    with pytest.raises(prepared.PreparedFormatError, match=r"split 'train' in .*: 2 images, 2 caption rows and 1 image"):
        prepared.save_split(
            tmp_path, "train", torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, 5, 6, dtype=torch.int64), [1]
        )
    images_path.write_bytes(b"not an array")
    with pytest.raises(prepared.PreparedFormatError, match=rf"{images_path} is not a readable .npy array"):
        prepared.load_images(tmp_path, "train")
    np.save(images_path, np.zeros((1, 3, 8, 8), dtype=np.float32))
    with pytest.raises(prepared.PreparedFormatError, match=rf"{images_path}: images must be uint8"):
        prepared.load_images(tmp_path, "train")
    np.save(images_path, np.array([{"pickled": 1}], dtype=object))  # never unpickled
    with pytest.raises(prepared.PreparedFormatError, match=rf"{images_path} is not a readable .npy array"):
        prepared.load_images(tmp_path, "train")
    with pytest.raises(prepared.PreparedFormatError, match=rf"{tmp_path / 'val.images.npy'} does not exist"):
        prepared.load_images(tmp_path, "val")


def test_meta_of_another_format_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / prepared.META_FILE).write_text(json.dumps({"format_version": 999}))
    with pytest.raises(prepared.PreparedFormatError, match=rf"{tmp_path / 'meta.json'} has format_version 999"):
        prepared.read_meta(tmp_path)
