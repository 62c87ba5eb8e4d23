"""Mask R-CNN style box-relative masks become image-sized masks in Detections, pasted as the zoo's exporter does."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import FIXTURES
from zoo.detections import Detections
from zoo.masks import reframe_box_masks

MASK_RCNN = "mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8"


def exporter_paste(masks: np.ndarray, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """The exporter's pasting, written with TensorFlow ops: the image's corners in each box's frame, then
    ``crop_and_resize`` of the box mask over that window (bilinear, 0 outside the mask)."""
    import tensorflow as tf

    masks = tf.constant(masks, tf.float32)[..., tf.newaxis]
    boxes = tf.constant(boxes, tf.float32)
    count = tf.shape(masks)[0]
    image_corners = tf.reshape(tf.concat([tf.zeros([count, 2]), tf.ones([count, 2])], axis=1), [-1, 2, 2])
    low, high = boxes[:, tf.newaxis, 0:2], boxes[:, tf.newaxis, 2:4]
    window = tf.reshape((image_corners - low) / tf.maximum(high - low, 1e-4), [-1, 4])
    pasted = tf.image.crop_and_resize(masks, window, tf.range(count), [height, width], extrapolation_value=0.0)
    return pasted[..., 0].numpy()


def test_two_by_two_mask_is_pasted_corner_aligned():
    mask = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    out = reframe_box_masks(mask, np.array([[0.25, 0.5, 0.75, 1.0]]), (4, 4))[0]
    np.testing.assert_allclose(out[1:3, 2:4], [[11 / 18, 1 / 6], [7 / 18, 5 / 6]], rtol=1e-6)
    inside = np.zeros((4, 4), bool)
    inside[1:3, 2:4] = True
    assert np.all(out[~inside] == 0.0)


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_and_boxes_equal_the_exporters_paste(seed: int):
    """Bit-for-bit, over boxes inside, across and outside the image, tiny, degenerate and inverted boxes,
    masks and images of any size down to a single row or column."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(1, 5))
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        height, width = (int(v) for v in rng.integers(1, 260, 2))
        masks = rng.random((n, h, w), dtype=np.float32)
        corners = rng.uniform(-0.3, 1.3, (n, 4)).astype(np.float32)
        kind = rng.integers(0, 4, n)
        low, high = np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])
        ordered = np.concatenate([low, high], 1)
        boxes = np.where((kind > 0)[:, None], ordered, corners)  # a quarter left as drawn: possibly inverted
        boxes[kind == 3, 2] = boxes[kind == 3, 0]  # zero height
        got = reframe_box_masks(masks, boxes, (height, width))
        want = exporter_paste(masks, boxes, height, width)
        np.testing.assert_array_equal(got, want, err_msg=f"{n} masks {h}x{w}, image {height}x{width}, boxes {boxes}")


def test_mask_rcnn_reference_detections_paste_as_the_exporter_does():
    """The reference Mask R-CNN's 100 detection boxes and its mask values, pasted into the 480x640 input."""
    ref = np.load(FIXTURES / MASK_RCNN / "reference.npz")
    boxes = ref["postprocess/detection_boxes"][0]
    shape = tuple(int(v) for v in ref["postprocess/detection_masks__shape"])
    # the reference keeps a sample of the masks: its values where sampled, the rest from the same distribution
    masks = np.random.default_rng(0).choice(ref["postprocess/detection_masks__sample_val"], size=shape)
    masks.ravel()[ref["postprocess/detection_masks__sample_idx"]] = ref["postprocess/detection_masks__sample_val"]
    masks = masks[0]
    got = reframe_box_masks(masks, boxes, (480, 640))
    np.testing.assert_array_equal(got, exporter_paste(masks, boxes, 480, 640))
    assert (got > 0.5).any(axis=(1, 2)).sum() > 50  # most boxes cover pixels: the comparison is not vacuous


def test_full_mask_fills_its_box():
    masks = np.ones((1, 33, 33), np.float32)
    boxes = np.array([[0.25, 0.5, 0.75, 1.0]], np.float32)  # rows 9.75..29.25, cols 19.5..39 of a 40x40 image
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
    assert np.allclose(out[:, 7] + out[:, 8], 1.0)  # the edge falls between columns 7 and 8
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


def test_masks_must_match_the_boxes():
    with pytest.raises(ValueError, match=r"\[N, h, w\] masks for 2 boxes"):
        reframe_box_masks(np.ones((3, 5, 5)), np.zeros((2, 4)), (10, 10))
