"""Loading caption datasets: Karpathy json, COCO json, SPEC parsing, splits, and every bad-input message."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from capnas.tools.data.datasets import DatasetError, coco_split, load_dataset


def _edit(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def test_flickr8k_has_the_standard_splits(flickr8k_dir: Path) -> None:
    dataset = load_dataset(str(flickr8k_dir / "dataset_flickr8k.json"))
    assert dataset.name == "flickr8k"
    assert dataset.split_sizes() == {"train": 5997, "val": 1000, "test": 1000}
    first = dataset.split("train")[0]
    assert (first.image_id, first.filename) == (0, "1000268201_693b08cb0e.jpg")
    assert first.captions[0] == "A child in a pink dress is climbing up a set of stairs in an entry way ."
    image = dataset.load_image(first)
    assert (image.mode, image.size) == ("RGB", (224, 224))


def test_karpathy_json_reads_items_and_splits(make_karpathy) -> None:
    path = _edit(make_karpathy(), lambda d: d["images"][0].update(split="restval"))
    dataset = load_dataset(str(path))
    assert dataset.name == "tiny"
    assert dataset.split_sizes() == {"train": 6, "val": 2, "test": 2}
    assert [item.image_id for item in dataset.split("val")] == [6, 7]
    assert dataset.split("train")[0].split == "train"  # restval counts as train
    item = dataset.split("test")[1]
    assert item.captions[2] == "A picture number 9, version 2."
    assert dataset.load_image(item).size == (49, 30)


def test_karpathy_filepath_is_a_subfolder_of_the_image_folder(make_karpathy) -> None:
    path = make_karpathy()
    (path.parent / "images" / "val2014").mkdir()
    (path.parent / "images" / "img06.png").rename(path.parent / "images" / "val2014" / "img06.png")
    _edit(path, lambda d: d["images"][6].update(filepath="val2014"))
    item = load_dataset(str(path)).split("val")[0]
    assert item.filename == "val2014/img06.png"
    assert load_dataset(str(path)).load_image(item).size == (46, 30)


def _write_coco(folder: Path, n: int) -> Path:
    (folder / "images").mkdir(parents=True)
    images, annotations = [], []
    for k in range(n):
        image_id = 1000 + 7 * k
        Image.new("RGB", (8, 8), (k, 0, 0)).save(folder / "images" / f"COCO_{image_id}.jpg")
        images.append({"id": image_id, "file_name": f"COCO_{image_id}.jpg", "width": 8, "height": 8})
        annotations += [{"id": 10 * k + j, "image_id": image_id, "caption": f"thing {k} take {j}"} for j in range(2 + k % 4)]
    path = folder / "captions_train2014.json"
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


def test_coco_json_groups_captions_and_splits_by_image_id_hash(tmp_path: Path) -> None:
    dataset = load_dataset(str(_write_coco(tmp_path / "coco", 30)))
    assert dataset.name == "coco"
    assert len(dataset.items) == 30
    item = next(i for i in dataset.items if i.image_id == 1000 + 7 * 3)
    assert item.captions == ["thing 3 take 0", "thing 3 take 1", "thing 3 take 2", "thing 3 take 3", "thing 3 take 4"]
    assert all(i.split == coco_split(i.image_id) for i in dataset.items)
    assert dataset.load_image(item).mode == "RGB"


def test_coco_split_is_stable_and_about_90_5_5() -> None:
    counts = Counter(coco_split(i) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.90) < 0.01
    assert abs(counts["val"] / 20_000 - 0.05) < 0.01
    # Pinned values: a change here silently reshuffles every COCO user's splits.
    assert [coco_split(i) for i in (7, 8, 19, 26, 391895)] == ["train", "test", "test", "val", "val"]


def test_unknown_split_names_it_and_the_available_ones() -> None:
    with pytest.raises(DatasetError, match=r"unknown split 'dev'.*available splits: train, val, test"):
        load_dataset("shapes:20").split("dev")


@pytest.mark.parametrize("spec", ["flickr30k", "nowhere/dataset.json", "shapes:abc"])
def test_unknown_spec_says_what_spec_may_be(spec: str) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(spec)
    assert repr(spec) in str(err.value)
    assert "SPEC may be 'shapes'" in str(err.value) and "Karpathy dataset_*.json or COCO captions_*.json" in str(err.value)


def test_spec_that_is_a_folder_not_a_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a .json file"):
        load_dataset(str(tmp_path))


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dataset_bad.json"
    path.write_text('{"images": [')
    with pytest.raises(DatasetError, match=rf"{path} is not valid JSON"):
        load_dataset(str(path))


def test_json_without_images_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dataset_bad.json"
    path.write_text('{"annotations": []}')
    with pytest.raises(DatasetError, match=rf"{path} has no top-level key 'images'"):
        load_dataset(str(path))


def test_karpathy_entry_missing_a_key_names_file_entry_and_key(make_karpathy) -> None:
    path = _edit(make_karpathy(), lambda d: d["images"][3].pop("sentences"))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    assert f"{path} is malformed: images[3]: missing key 'sentences'" in str(err.value)


def test_coco_annotation_missing_a_key_names_it(tmp_path: Path) -> None:
    path = _edit(_write_coco(tmp_path / "coco", 3), lambda d: d["annotations"][4].pop("caption"))
    with pytest.raises(DatasetError, match=r"annotations\[4\]: missing key 'caption'"):
        load_dataset(str(path))


def test_empty_caption_names_the_image_entry(make_karpathy) -> None:
    path = _edit(make_karpathy(), lambda d: d["images"][2]["sentences"][1].update(raw="  "))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    assert "images[2] (imgid 2, img02.png) has an empty caption (number 1)" in str(err.value)
    assert str(path) in str(err.value)


def test_image_without_captions_names_the_entry(tmp_path: Path) -> None:
    path = _edit(_write_coco(tmp_path / "coco", 3), lambda d: d.update(annotations=d["annotations"][2:]))
    with pytest.raises(DatasetError, match=r"images\[0\] \(id 1000, COCO_1000.jpg\) has no captions"):
        load_dataset(str(path))


def test_unknown_split_value_in_json_names_the_entry(make_karpathy) -> None:
    path = _edit(make_karpathy(), lambda d: d["images"][5].update(split="dev"))
    with pytest.raises(DatasetError, match=r"images\[5\] \(imgid 5, img05.png\) has split 'dev'"):
        load_dataset(str(path))


def test_duplicate_image_id_is_named(make_karpathy) -> None:
    path = _edit(make_karpathy(), lambda d: d["images"][4].update(imgid=1))
    with pytest.raises(DatasetError, match=r"image id 1 appears twice \(second: img04.png\)"):
        load_dataset(str(path))


def test_missing_image_file_names_the_file_and_the_folder(make_karpathy) -> None:
    path = make_karpathy()
    (path.parent / "images" / "img07.png").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    assert f"missing from {path.parent / 'images'}: img07.png" in str(err.value)


def test_missing_image_folder_is_named(make_karpathy, tmp_path: Path) -> None:
    path = make_karpathy()
    with pytest.raises(DatasetError, match=rf"image folder {tmp_path / 'elsewhere'} for {path} does not exist"):
        load_dataset(str(path), images=tmp_path / "elsewhere")


def test_images_folder_can_be_given_explicitly(make_karpathy, tmp_path: Path) -> None:
    path = make_karpathy()
    moved = (path.parent / "images").rename(tmp_path / "pictures")
    assert load_dataset(str(path), images=moved).images_dir == moved


def test_corrupt_image_names_the_file(make_karpathy) -> None:
    path = make_karpathy()
    (path.parent / "images" / "img01.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dataset = load_dataset(str(path))
    with pytest.raises(DatasetError, match=rf"cannot decode image {path.parent / 'images' / 'img01.png'}"):
        dataset.load_image(dataset.items[1])


def test_shapes_spec_takes_no_image_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="drawn in memory"):
        load_dataset("shapes", images=tmp_path)


def test_fingerprint_follows_json_and_image_folder(make_karpathy) -> None:
    path = make_karpathy()
    before = load_dataset(str(path)).fingerprint
    assert load_dataset(str(path)).fingerprint == before
    Image.new("RGB", (5, 5)).save(path.parent / "images" / "img03.png")
    assert load_dataset(str(path)).fingerprint != before


def test_fingerprint_is_the_content_not_the_copy(make_karpathy, tmp_path) -> None:
    """A copy of the same files with new mtimes (a re-synced share) keys the same prepared cache; unlisted files don't count."""
    path = make_karpathy()
    before = load_dataset(str(path)).fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(path.parent, copy)  # copytree keeps mtimes: move them on, as a fresh sync would
    for image in (copy / "images").iterdir():
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**12))
    (copy / "images" / "notes.txt").write_text("not an image of the data set")
    assert load_dataset(str(copy / path.name), images=copy / "images").fingerprint == before
