"""Mask R-CNN style box-relative masks become image-sized masks in Detections."""
from __future__ import annotations

import numpy as np

from zoo.detections import Detections
from zoo.masks import reframe_box_masks


def test_full_mask_fills_exactly_its_box():
    masks = np.ones((1, 33, 33), np.float32)
    boxes = np.array([[0.25, 0.5, 0.75, 1.0]], np.float32)  # rows 10..29, cols 20..39 of a 40x40 image
    out = reframe_box_masks(masks, boxes, (40, 40))
    assert out.shape == (1, 40, 40)
    on = np.argwhere(out[0] > 0.5)
    assert on[:, 0].min() == 10 and on[:, 0].max() == 29
    assert on[:, 1].min() == 20 and on[:, 1].max() == 39
    assert out[0].sum() == 20 * 20


def test_mask_shape_is_kept_inside_the_box():
    mask = np.zeros((4, 4), np.float32)
    mask[:, :2] = 1.0  # left half of the box
    out = reframe_box_masks(mask[None], np.array([[0.0, 0.0, 1.0, 1.0]]), (8, 16))[0]
    assert out[:, :6].min() > 0.99 and out[:, 10:].max() < 0.01
    assert np.allclose(out[:, 7] + out[:, 8], 1.0)  # the edge falls halfway, between columns 7 and 8
    assert np.all((out >= 0) & (out <= 1))


def test_degenerate_boxes_give_empty_masks_and_detections_carry_them():
    masks = np.ones((2, 5, 5), np.float32)
    boxes = np.array([[0.5, 0.5, 0.5, 0.9], [0.0, 0.0, 0.5, 0.5]], np.float32)
    out = reframe_box_masks(masks, boxes, (10, 10))
    assert out[0].sum() == 0 and out[1].sum() == 25
    det = Detections.from_normalized(boxes, [0.9, 0.8], [1, 2], (10, 10), masks=out)
    assert det.masks.shape == (2, 10, 10)
    assert det.filter(0.85).masks.shape == (1, 10, 10)
    drawn = det.draw(np.zeros((10, 10, 3), np.uint8), score_threshold=0.0)
    assert drawn[2, 2].any()  # the mask of the second detection is painted
