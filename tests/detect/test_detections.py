"""The one output contract, Detections: conversions, selection, COCO results, JSON, drawing."""
from __future__ import annotations

import json

import numpy as np
import pytest

from zoo.detections import Detections
from zoo.errors import ArgumentError, InputError


def _dets() -> Detections:
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.75, 0.75]], np.float32)
    kps = np.tile(np.array([[0.25, 0.5]], np.float32), (3, 17, 1))
    return Detections.from_normalized(boxes, [0.3, 0.9, 0.6], [18, 1, 3], (200, 400),
                                      keypoints_normalized=kps, keypoint_scores=np.full((3, 17), 0.7))


def test_normalized_yxyx_becomes_absolute_xyxy():
    d = _dets()
    np.testing.assert_allclose(d.boxes[0], [80, 20, 240, 100])  # x = 0.2*400, y = 0.1*200 ...
    np.testing.assert_allclose(d.boxes_normalized[0], [0.1, 0.2, 0.5, 0.6])
    assert d.labels == ("dog", "person", "car") and d.classes.dtype == np.int64
    np.testing.assert_allclose(d.keypoints[0, 0], [200.0, 50.0])  # (x, y) pixels from normalized (y, x)
    assert d.image_size == (200, 400) and len(d) == 3


def test_out_of_range_boxes_are_clipped_to_the_image():
    d = Detections.from_normalized([[-0.2, 0.1, 1.3, 0.5]], [0.5], [1], (10, 10))
    np.testing.assert_allclose(d.boxes_normalized[0], [0.0, 0.1, 1.0, 0.5])


def test_filter_sorts_thresholds_and_caps():
    d = _dets().filter(0.5)
    assert d.scores.tolist() == pytest.approx([0.9, 0.6]) and d.labels == ("person", "car")
    assert d.keypoints.shape == (2, 17, 2) and d.keypoint_scores.shape == (2, 17)
    assert len(_dets().filter(0.0, max_detections=1)) == 1
    assert len(_dets().filter(0.99)) == 0


def test_to_coco_is_absolute_xywh_with_category_mapping():
    d = _dets()
    rows = d.to_coco(image_id=7)
    assert rows[0] == {"image_id": 7, "category_id": 18, "bbox": pytest.approx([80, 20, 160, 80]),
                       "score": pytest.approx(0.3), "keypoints": rows[0]["keypoints"]}
    assert len(rows[0]["keypoints"]) == 17 * 3
    mapped = d.to_coco(7, category_ids={1: 100, 3: 300})
    assert [r["category_id"] for r in mapped] == [100, 300]  # the dog has no counterpart


def test_json_round_trip_and_custom_label_map():
    d = Detections.from_normalized([[0, 0, 0.5, 0.5]], [0.8], [2], (4, 4), label_map={2: "duck"})
    data = json.loads(d.to_json())
    assert data["labels"] == ["duck"] and data["boxes"] == [[0.0, 0.0, 2.0, 2.0]]
    unknown = Detections.from_normalized([[0, 0, 0.5, 0.5]], [0.8], [5], (4, 4), label_map={2: "duck"})
    assert unknown.labels == ("class_5",)


def test_draw_marks_the_image_and_keeps_its_size():
    image = np.zeros((200, 400, 3), np.uint8)
    drawn = _dets().draw(image, score_threshold=0.5)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and drawn.any()
    assert not image.any()  # the input is left alone


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score_threshold": float("nan")}, "score_threshold must be a finite number"),
        ({"score_threshold": 1.5}, "score_threshold must be at most 1"),
        ({"score_threshold": "0.5"}, "score_threshold must be a number"),
        ({"max_detections": -1}, "max_detections must be at least 1"),
        ({"max_detections": 2.5}, "max_detections must be a whole number"),
        ({"max_detections": True}, "max_detections must be a whole number"),
    ],
)
def test_filter_refuses_odd_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ArgumentError, match=message):
        _dets().filter(**kwargs)


def test_draw_checks_the_image_and_its_options() -> None:
    d = _dets()
    h, w = d.image_size
    with pytest.raises(InputError, match=f"for a {h}x{w} image"):
        d.draw(np.zeros((h + 1, w, 3), np.uint8))
    with pytest.raises(InputError, match="channels"):
        d.draw(np.zeros((h, w, 2), np.uint8))
    with pytest.raises(InputError, match="float images must lie in"):
        d.draw(np.full((h, w, 3), 200.0))
    with pytest.raises(InputError, match="not str"):
        d.draw("picture.png")
    with pytest.raises(ArgumentError, match="score_threshold must be a finite number"):
        d.draw(np.zeros((h, w, 3), np.uint8), score_threshold=float("nan"))
    with pytest.raises(ArgumentError, match=r"edges\[0\]"):
        d.draw(np.zeros((h, w, 3), np.uint8), edges=[(0, 1, 2)])
    gray16 = np.full((h, w), 65535, np.uint16)  # other accepted forms are drawn on like uint8 RGB
    assert d.draw(gray16).shape == (h, w, 3)


def test_to_coco_refuses_odd_ids() -> None:
    d = _dets()
    for bad in ("7", 7.0, None, True):
        with pytest.raises(ArgumentError, match="image_id must be a whole number"):
            d.to_coco(bad)
    assert d.to_coco(np.int64(7))[0]["image_id"] == 7
    with pytest.raises(ArgumentError, match="category_ids"):
        d.to_coco(7, category_ids={1: "person"})
    with pytest.raises(ArgumentError, match="category_ids must map"):
        d.to_coco(7, category_ids=[1, 2])
