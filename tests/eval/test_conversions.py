"""Exact conversions: boxes (xyxy/xywh, normalized/absolute), category ids, Detections -> COCO results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from zoo.detections import Detections
from zoo.errors import DatasetError
from zoo.eval.coco_results import (
    absolute_to_normalized,
    annotations_to_detections,
    category_mapping,
    detections_to_coco,
    is_coco_label_map,
    load_results,
    normalized_to_absolute,
    write_results,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from zoo.labels import COCO_LABELS


def test_box_formats_both_ways() -> None:
    xyxy = np.array([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 640.0, 480.0]])
    xywh = np.array([[10.0, 20.0, 40.0, 60.0], [0.0, 0.0, 640.0, 480.0]])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)
    np.testing.assert_array_equal(xywh_to_xyxy(xywh), xyxy)
    norm = np.array([[20 / 480, 10 / 640, 80 / 480, 50 / 640], [0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(absolute_to_normalized(xyxy, (480, 640)), norm, rtol=0, atol=1e-15)
    np.testing.assert_allclose(normalized_to_absolute(norm, (480, 640)), xyxy, rtol=0, atol=1e-12)
    rng = np.random.default_rng(0)
    boxes = np.sort(rng.uniform(0, 1, (50, 2, 2)), axis=1).reshape(50, 4)[:, [0, 2, 1, 3]]  # ymin,xmin,ymax,xmax
    back = absolute_to_normalized(normalized_to_absolute(boxes, (333, 517)), (333, 517))
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-12)


def test_detections_to_coco_exact() -> None:
    dets = Detections.from_normalized(
        np.array([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.5, 0.25]], np.float32),
        np.array([0.9, 0.4], np.float32), np.array([18, 1]), (480, 640))
    res = detections_to_coco(dets, 7)
    assert res == [
        {"image_id": 7, "category_id": 18, "bbox": [320.0, 120.0, 320.0, 240.0], "score": pytest.approx(0.9)},
        {"image_id": 7, "category_id": 1, "bbox": [0.0, 0.0, 160.0, 240.0], "score": pytest.approx(0.4)},
    ]
    assert res[0]["score"] == float(np.float32(0.9))
    # the same as the output contract's own conversion
    assert res == dets.to_coco(7)
    # model ids mapped to dataset ids; unmapped classes dropped
    mapped = detections_to_coco(dets, 7, {18: 3})
    assert [(r["category_id"], r["bbox"]) for r in mapped] == [(3, [320.0, 120.0, 320.0, 240.0])]


def test_keypoints_and_masks_in_results() -> None:
    from pycocotools import mask as mask_utils

    kp = np.zeros((1, 17, 2), np.float32)
    kp[0, :, 0] = np.linspace(0.1, 0.9, 17)  # y
    kp[0, :, 1] = 0.5  # x
    masks = np.zeros((1, 40, 60), np.float32)
    masks[0, 10:20, 5:30] = 0.9
    dets = Detections.from_normalized(np.array([[0.1, 0.1, 0.9, 0.9]]), np.array([0.8]), np.array([1]), (40, 60),
                                      keypoints_normalized=kp, keypoint_scores=np.full((1, 17), 0.7), masks=masks)
    (res,) = detections_to_coco(dets, 3)
    assert len(res["keypoints"]) == 51
    np.testing.assert_allclose(res["keypoints"][0:3], [30.0, 0.1 * 40, 0.7], rtol=1e-6)
    decoded = mask_utils.decode({"size": res["segmentation"]["size"], "counts": res["segmentation"]["counts"].encode()})
    np.testing.assert_array_equal(decoded, (masks[0] > 0.5).astype(np.uint8))
    json.dumps(res)  # JSON-ready
    assert "keypoints" not in detections_to_coco(dets, 3, keypoints=False)[0]


def test_category_mapping_by_id_and_by_name() -> None:
    assert is_coco_label_map(COCO_LABELS) and not is_coco_label_map({1: "circle"})
    coco_subset = {1: "person", 18: "dog", 90: "toothbrush"}
    assert category_mapping(COCO_LABELS, coco_subset) == {1: 1, 18: 18, 90: 90}
    # a dataset with its own ids: by name (case, spaces and underscores ignored)
    custom = {1: "Dog", 2: "traffic_light", 3: "unicorn"}
    assert category_mapping(COCO_LABELS, custom) == {18: 1, 10: 2}
    # a non-COCO model on a COCO dataset: by name
    assert category_mapping({0: "person", 1: "dog"}, COCO_LABELS) == {0: 1, 1: 18}
    with pytest.raises(DatasetError, match="no model class matches"):
        category_mapping({1: "circle"}, {1: "person"})


def test_annotations_round_trip() -> None:
    anns = [{"bbox": [10.0, 20.0, 30.0, 40.0], "category_id": 2}, {"bbox": [0.0, 5.0, 7.0, 9.0], "category_id": 1}]
    dets = annotations_to_detections(anns, (100, 200), {1: "a", 2: "b"})
    assert dets.labels == ("b", "a")
    back = detections_to_coco(dets, 1)
    assert [r["bbox"] for r in back] == [a["bbox"] for a in anns]
    assert [r["category_id"] for r in back] == [2, 1]


def test_results_files(tmp_path: Path) -> None:
    res = [{"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]
    path = write_results(res, tmp_path / "sub" / "dets.json")
    assert load_results(path) == res
    with pytest.raises(DatasetError, match="not found"):
        load_results(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(DatasetError, match="JSON list"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('[{"image_id": 1, "bbox": [0, 0, 1, 1]}]')
    with pytest.raises(DatasetError, match=r"results\[0\] lacks category_id, score"):
        load_results(tmp_path / "bad.json")


def test_detections_to_coco_refuses_odd_ids() -> None:
    dets = Detections.from_normalized(np.array([[0.1, 0.1, 0.5, 0.5]]), np.array([0.9]), np.array([1]), (10, 10))
    for bad in (None, 1.5, "", [1]):
        with pytest.raises(DatasetError, match="image_id must be an integer"):
            detections_to_coco(dets, bad)
    with pytest.raises(DatasetError, match="category_ids must map"):
        detections_to_coco(dets, 1, [1, 2])
    assert detections_to_coco(dets, "a.jpg")[0]["image_id"] == "a.jpg"
