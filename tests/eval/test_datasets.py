"""The synthetic shapes dataset and the COCO-format reader."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.datasets.synthetic import SHAPE_COLORS
from zoo.errors import DatasetError, ZooError


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 8, seed=3, image_size=(96, 128), max_objects=3)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_coco_format(shapes: Path) -> None:
    data = json.loads((shapes / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["circle", "square", "triangle"]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3]
    assert len(data["images"]) == 8
    assert sorted(p.name for p in (shapes / "images").iterdir()) == sorted(i["file_name"] for i in data["images"])
    assert data["annotations"], "every image has at least one object"
    per_image = {i["id"]: 0 for i in data["images"]}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] += 1
        x, y, w, h = ann["bbox"]
        assert ann["iscrowd"] == 0
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 96
        assert 0 < ann["area"] <= w * h
    assert all(1 <= n <= 3 for n in per_image.values())
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])


def test_boxes_are_tight_around_the_shape_colour(shapes: Path) -> None:
    ds = CocoDataset(shapes / "annotations.json", shapes / "images")
    names = ds.categories
    for _, image, anns in ds:
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8
        for ann in anns:
            x, y, w, h = (int(v) for v in ann["bbox"])
            base = np.array(SHAPE_COLORS[names[ann["category_id"]]], np.float32)
            crop = image[y:y + h, x:x + w].astype(np.float32)
            # a pixel of the shape's colour (up to the brightness jitter) on every edge row/column
            hue = crop / np.maximum(crop.sum(-1, keepdims=True), 1) - base / base.sum()
            on = np.abs(hue).max(-1) < 0.03
            assert on[0].any() and on[-1].any() and on[:, 0].any() and on[:, -1].any()
            assert abs(int(on.sum()) - ann["area"]) <= 0.1 * ann["area"]


def test_deterministic_from_seed(tmp_path: Path) -> None:
    a = make_shapes_dataset(tmp_path / "a", 3, seed=11, image_size=64)
    b = make_shapes_dataset(tmp_path / "b", 3, seed=11, image_size=64)
    c = make_shapes_dataset(tmp_path / "c", 3, seed=12, image_size=64)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_custom_categories(tmp_path: Path) -> None:
    root = make_shapes_dataset(tmp_path, 4, categories={7: "triangle", 9: "circle"}, image_size=64)
    ds = CocoDataset(root / "annotations.json", root / "images")
    assert ds.categories == {7: "triangle", 9: "circle"}
    assert {a["category_id"] for _, _, anns in ds for a in anns} <= {7, 9}
    with pytest.raises(DatasetError, match="hexagon"):
        make_shapes_dataset(tmp_path / "x", 1, categories=["hexagon"])


def test_reader_views_subset_and_shard(shapes: Path) -> None:
    ds = CocoDataset(shapes / "annotations.json", shapes / "images")
    assert len(ds) == 8 and ds.image_ids == list(range(1, 9))
    sub = ds.subset(3)
    assert sub.image_ids == [1, 2, 3]
    assert sum(len(a) for _, _, a in sub) == sum(len(ds.annotations(i)) for i in (1, 2, 3))
    assert {a["image_id"] for a in sub.to_dict()["annotations"]} <= {1, 2, 3}
    assert ds.subset(None) is ds and ds.subset(100) is ds
    shards = [ds.shard(i, 3).image_ids for i in range(3)]
    assert sorted(sum(shards, [])) == ds.image_ids
    np.testing.assert_array_equal(ds.load_image(2), next(img for i, img, _ in ds if i == 2))


def test_reader_errors_are_clear(tmp_path: Path, shapes: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        CocoDataset(tmp_path / "nope.json", shapes / "images")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        CocoDataset(bad, shapes / "images")
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match="categories"):
        CocoDataset(bad, shapes / "images")
    data = json.loads((shapes / "annotations.json").read_text())
    data["annotations"][0]["bbox"] = [1, 2, 3]
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"bbox"):
        CocoDataset(bad, shapes / "images")
    with pytest.raises(DatasetError, match="images folder"):
        CocoDataset(shapes / "annotations.json", tmp_path / "missing")
    data = json.loads((shapes / "annotations.json").read_text())
    data["images"][0]["file_name"] = "gone.png"
    bad.write_text(json.dumps(data))
    ds = CocoDataset(bad, shapes / "images")
    with pytest.raises(ZooError, match="gone.png"):
        ds.load_image(data["images"][0]["id"])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    data["images"][0]["file_name"] = "junk.png"
    bad.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="cannot be decoded"):
        CocoDataset(bad, tmp_path).load_image(data["images"][0]["id"])


def test_reader_names_the_bad_record(tmp_path: Path, shapes: Path) -> None:
    original = json.loads((shapes / "annotations.json").read_text())
    bad = tmp_path / "bad.json"
    cases = [
        (lambda d: d["images"][2].update(id="x"), r"images\[2\]\.id is a string"),
        (lambda d: d["images"][0].update(id=True), r"images\[0\]\.id must be an integer"),
        (lambda d: d["images"][0].update(width=-5), r"images\[0\]\.width must be a positive integer"),
        (lambda d: d["categories"][0].update(id="1"), r"categories\[0\]\.id must be an integer"),
        (lambda d: d["annotations"][1].update(bbox=[0, 0, "3", 4]), r"annotations\[1\]\.bbox"),
        (lambda d: d["annotations"][1].update(bbox=[0, 0, -3, 4]), r"annotations\[1\]\.bbox has a negative"),
        (lambda d: d["annotations"][1].update(iscrowd=7), r"annotations\[1\]\.iscrowd must be 0 or 1"),
        (lambda d: d["annotations"][1].update(image_id=str(d["annotations"][1]["image_id"])),
         r"annotations\[1\] refers to unknown image_id"),
    ]
    for mutate, message in cases:
        data = json.loads(json.dumps(original))
        mutate(data)
        bad.write_text(json.dumps(data))
        with pytest.raises(DatasetError, match=message):
            CocoDataset(bad, shapes / "images")
    bad.write_text('{"images": [], "annotations": [], "categories": [], "x": Infinity}')
    with pytest.raises(DatasetError, match="Infinity"):
        CocoDataset(bad, shapes / "images")
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DatasetError, match="not a UTF-8 text file"):
        CocoDataset(bad, shapes / "images")
    with pytest.raises(DatasetError, match="is a folder"):
        CocoDataset(tmp_path, shapes / "images")


def test_generator_arguments_are_checked(tmp_path: Path) -> None:
    from zoo.errors import ArgumentError

    for kwargs, message in [({"num_images": -1}, "num_images must be at least 0"),
                            ({"num_images": 2.5}, "num_images must be a whole number"),
                            ({"num_images": 1, "max_objects": 0}, "max_objects must be at least 1"),
                            ({"num_images": 1, "seed": -3}, "seed must be at least 0"),
                            ({"num_images": 1, "image_size": (64, 64, 3)}, "one side or"),
                            ({"num_images": 1, "image_size": 16}, "at least 32x32")]:
        with pytest.raises((ArgumentError, DatasetError), match=message):
            make_shapes_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
