"""CenterNet building blocks on small hand-made tensors: resizers, peaks, boxes, keypoint snapping."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.errors import ConfigError
from zoo.models.centernet import (
    KeypointTask,
    boxes_at_peaks,
    normalize_strided,
    postprocess_keypoints,
    refine_keypoints,
    top_k_locations,
    true_image_mask,
)
from zoo.models.preprocess import (
    Resizer,
    resize_batch,
    resize_image,
    resizer_from_config,
)
from zoo.pipeline_config import parse


@pytest.mark.parametrize(
    "shape, expected",
    [((480, 640), (384, 512)), ((640, 480), (512, 384)), ((1000, 10), (512, 5)), ((512, 512), (512, 512)),
     ((100, 150), (341, 512))],
)
def test_keep_aspect_ratio_sizes_and_padding(shape: tuple[int, int], expected: tuple[int, int]) -> None:
    resizer = Resizer("keep_aspect_ratio", min_dimension=512, max_dimension=512, pad_to_max_dimension=True)
    image = tf.ones([*shape, 3]) * 10.0
    out, true_shape = resize_image(resizer, image)
    assert tuple(out.shape) == (512, 512, 3)
    assert tuple(true_shape.numpy()) == (*expected, 3)
    assert float(tf.reduce_min(out[: expected[0], : expected[1]])) == pytest.approx(10.0)
    padded = np.ones([512, 512], bool)
    padded[: expected[0], : expected[1]] = False
    assert not out.numpy()[padded].any()  # zero padding below and right of the image


def test_fixed_shape_and_config_parsing() -> None:
    resizer = resizer_from_config(parse("fixed_shape_resizer { height: 320 width: 300 }"))
    out, shapes = resize_batch(resizer, tf.zeros([2, 50, 70, 3], tf.uint8))
    assert tuple(out.shape) == (2, 320, 300, 3) and shapes.numpy().tolist() == [[320, 300, 3]] * 2
    keep = resizer_from_config(parse("keep_aspect_ratio_resizer { min_dimension: 640 max_dimension: 640 }"))
    assert keep == Resizer("keep_aspect_ratio", 640, 640, False)
    with pytest.raises(ConfigError, match="BICUBIC"):
        resizer_from_config(parse("fixed_shape_resizer { height: 3 width: 3 resize_method: BICUBIC }"))


def test_resize_uses_tf1_bilinear_alignment() -> None:
    """half_pixel_centers=False: output pixel i samples input i * in/out (no half-pixel shift)."""
    image = tf.reshape(tf.range(4, dtype=tf.float32), [1, 4, 1]) * tf.ones([1, 1, 3])
    resizer = Resizer("fixed_shape", height=1, width=8)
    out, _ = resize_image(resizer, image)
    np.testing.assert_allclose(out[0, :, 0].numpy(), [0, 0.5, 1, 1.5, 2, 2.5, 3, 3])


def test_top_k_keeps_local_peaks_and_decodes_indices() -> None:
    heat = np.zeros([1, 4, 5, 3], np.float32)
    heat[0, 1, 2, 1] = 0.9
    heat[0, 1, 3, 1] = 0.8  # neighbour of a higher value in the same channel: not a peak
    heat[0, 3, 4, 2] = 0.7
    heat[0, 1, 3, 0] = 0.6  # other channel: a peak of its own
    scores, ys, xs, cs = (t.numpy()[0] for t in top_k_locations(tf.constant(heat), 3, 3))
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6])
    assert list(zip(ys, xs, cs)) == [(1, 2, 1), (3, 4, 2), (1, 3, 0)]


def test_true_image_mask_compares_grid_with_pixels() -> None:
    mask = true_image_mask(tf.zeros([2, 8, 8, 1]), tf.constant([[6, 3, 3], [384, 512, 3]])).numpy()[..., 0]
    assert mask[0, :6, :3].all() and not mask[0, 6:].any() and not mask[0, :, 3:].any()
    assert mask[1].all()  # pixel sizes exceed every grid index: nothing masked (the original's quirk)


def test_boxes_clip_to_grid_and_normalize_by_true_size() -> None:
    sizes = np.zeros([1, 4, 4, 2], np.float32)
    offsets = np.zeros([1, 4, 4, 2], np.float32)
    sizes[0, 0, 0] = [4.0, 2.0]
    sizes[0, 3, 3] = [-1.0, 2.0]  # negative sizes are clamped to 0
    offsets[0, 0, 0] = [0.5, 0.25]
    boxes = boxes_at_peaks(tf.constant([[0, 3]]), tf.constant([[0, 3]]), tf.constant(sizes), tf.constant(offsets))
    np.testing.assert_allclose(boxes.numpy()[0], [[0, 0, 2.5, 1.25], [3, 2, 3, 4]])
    normalized = normalize_strided(boxes, 4, tf.constant([[8, 16, 3]])).numpy()[0]
    np.testing.assert_allclose(normalized, [[0, 0, 1, 0.3125], [1, 0.5, 1, 1]])


def _task(**kw) -> KeypointTask:
    base = {"name": "pose", "class_id": 0, "num_keypoints": 2, "keypoint_indices": (0, 1),
            "per_keypoint_offset": True, "num_candidates_per_keypoint": 2}
    base.update(kw)
    return KeypointTask(**base)


def test_refine_snaps_only_to_close_confident_candidates() -> None:
    task = _task()
    regressed = tf.constant([[[[2.0, 2.0], [5.0, 5.0]]]])  # one instance, two keypoints
    candidates = tf.constant([[[[2.5, 2.0], [9.0, 9.0]], [[0.0, 0.0], [8.0, 8.0]]]])  # [B, k=2, K=2, 2]
    scores = tf.constant([[[0.8, 0.9], [0.05, 0.7]]])
    counts = tf.constant([[1, 2]])
    boxes = tf.constant([[[0.0, 0.0, 6.0, 6.0]]])
    coords, kp_scores = refine_keypoints(regressed, candidates, scores, counts, boxes, task)
    # keypoint 0 snaps to (2.5, 2); keypoint 1's nearest candidate (8, 8) lies outside the scaled box.
    np.testing.assert_allclose(coords.numpy()[0, 0], [[2.5, 2.0], [5.0, 5.0]])
    np.testing.assert_allclose(kp_scores.numpy()[0, 0], [0.8, task.unmatched_keypoint_score])


def test_keypoints_only_for_the_keypoint_class() -> None:
    task = _task()
    h = w = 4
    heat = np.full([1, h, w, 2], -5.0, np.float32)
    heat[0, 1, 1] = 3.0
    preds = {
        task.head("heatmap"): [tf.constant(heat)],
        task.head("offset"): [tf.zeros([1, h, w, 4])],
        task.head("regression"): [tf.zeros([1, h, w, 4])],
    }
    classes = tf.constant([[0, 5, 0]])
    ys = xs = tf.constant([[1, 2, 3]])
    boxes = tf.constant([[[0.0, 0.0, 3.0, 3.0]] * 3])
    true_shapes = tf.constant([[16, 16, 3]])
    coords, scores = postprocess_keypoints((task,), preds, classes, ys, xs, boxes, tf.constant([2]), 4, true_shapes)
    coords, scores = coords.numpy()[0], scores.numpy()[0]
    np.testing.assert_allclose(coords[0], [[0.25, 0.25]] * 2)  # (1, 1) * 4 / 16
    assert scores[0].min() > 0.9
    assert not coords[1].any() and not scores[1].any()  # class 5 has no keypoints
    assert not coords[2].any()  # beyond num_detections
    single, _ = postprocess_keypoints((task,), preds, classes, ys, xs, boxes, tf.constant([2]), 4, true_shapes,
                                      single_class=True)
    assert single.numpy()[0, 1].any()  # one-class models decode every detection
