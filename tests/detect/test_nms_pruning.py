"""Per-class NMS over the best candidates only gives the all-candidates result, ties and order included."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo.models import nms


def _inputs(num_boxes: int, num_classes: int, levels: int | None, seed: int) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.0, 1.0, (num_boxes, 2))
    sizes = rng.uniform(0.02, 0.3, (num_boxes, 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = rng.uniform(0.0, 1.0, (num_boxes, num_classes)) ** 4
    if levels:  # few distinct values: many exact ties across boxes and classes
        scores = np.round(scores * levels) / levels
    return tf.constant(boxes, tf.float32), tf.constant(scores, tf.float32)


def _run(fn, boxes, scores, config):
    window = tf.constant([0.0, 0.0, 0.9, 0.8])
    index = {"index": tf.cast(tf.range(tf.shape(boxes)[0]), tf.float32)}
    fields, num = tf.function(lambda b, s: fn(b, s, config, window, index), autograph=False)(boxes, scores)
    return {k: v.numpy() for k, v in fields.items()}, int(num)


@pytest.mark.parametrize(
    ("num_boxes", "num_classes", "levels", "max_total"),
    [
        (2000, 30, None, 50),  # settles on the cutoff
        (2000, 30, 20, 50),  # heavy ties at the cutoff
        (400, 4, 8, 50),  # fewer boxes than the cutoff's count
        (40, 2, None, 100),  # fewer detections than max_total_size: all candidates
    ],
)
def test_pruned_nms_equals_all_candidates(num_boxes, num_classes, levels, max_total):
    config = nms.NmsConfig(score_thresh=0.01, iou_thresh=0.5, max_size_per_class=40, max_total_size=max_total)
    boxes, scores = _inputs(num_boxes, num_classes, levels, seed=num_boxes + num_classes)
    got, got_num = _run(nms.multiclass_nms, boxes, scores, config)
    want, want_num = _run(nms._multiclass_nms_all, boxes, scores, config)
    assert got_num == want_num > 0
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_nan_scores_are_never_selected():
    config = nms.NmsConfig(score_thresh=0.0, iou_thresh=0.5, max_size_per_class=20, max_total_size=20)
    boxes, scores = _inputs(500, 5, None, seed=3)
    scores = tf.tensor_scatter_nd_update(scores, [[0, 0], [7, 3], [100, 1]], [np.nan] * 3)
    got, got_num = _run(nms.multiclass_nms, boxes, scores, config)
    want, want_num = _run(nms._multiclass_nms_all, boxes, scores, config)
    assert got_num == want_num == 20
    assert not np.isnan(got["scores"]).any()
    np.testing.assert_array_equal(got["index"], want["index"])


@pytest.mark.parametrize("case", ["tied", "nan", "empty", "zero"])
def test_degenerate_scores_match_all_candidates(case):
    config = nms.NmsConfig(score_thresh=0.0, iou_thresh=0.5, max_size_per_class=10, max_total_size=10)
    boxes, _ = _inputs(0 if case == "empty" else 60, 5, None, seed=1)
    fill = {"tied": 0.5, "nan": np.nan, "empty": 0.5, "zero": 0.0}[case]
    scores = tf.fill([tf.shape(boxes)[0], 5], np.float32(fill))
    got, got_num = _run(nms.multiclass_nms, boxes, scores, config)
    want, want_num = _run(nms._multiclass_nms_all, boxes, scores, config)
    assert got_num == want_num == (10 if case == "tied" else 0)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
