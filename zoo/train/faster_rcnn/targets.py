"""Faster R-CNN training targets: match candidate boxes (RPN anchors, or second-stage proposals) to
ground truth by IoU and encode what each candidate should predict.

Batched TensorFlow, in the training graph. Ground truth is padded as in :mod:`zoo.train.ssd.targets`
(``boxes`` ``[B, M, 4]`` normalized, ``classes`` ``[B, M]`` 0-based, ``weights`` ``[B, M]``, 0 for
padding); candidates are ``[B, N, 4]`` in the same normalized frame with a ``valid`` mask ``[B, N]``
(the padding rows of a proposal batch take part in nothing).

The original's two target assigners, whose thresholds are fixed there (not configurable):

* first stage (:data:`RPN_MATCHER`): positive at IoU >= 0.7, negative below 0.3, ignored between, and
  every ground-truth box forced onto the anchor it overlaps most;
* second stage (:data:`DETECTION_MATCHER`): positive at IoU >= 0.5, every other proposal a negative.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

from ..ssd.targets import IGNORED, UNMATCHED, ArgmaxMatcher

__all__ = ["DETECTION_MATCHER", "IGNORED", "RPN_MATCHER", "UNMATCHED", "assign_targets", "inside_image",
           "pairwise_iou"]

RPN_MATCHER = ArgmaxMatcher(matched_threshold=0.7, unmatched_threshold=0.3, force_match_for_each_row=True)
DETECTION_MATCHER = ArgmaxMatcher(matched_threshold=0.5, unmatched_threshold=0.5)


def inside_image(anchors: tf.Tensor, height: Any, width: Any) -> tf.Tensor:
    """``[N]`` bool: which anchors ``[N, 4]`` (pixels) lie wholly inside the ``height`` x ``width`` input.
    Without ``clip_anchors_to_image`` the original trains the RPN on these anchors only."""
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    return ((anchors[:, 0] >= 0.0) & (anchors[:, 1] >= 0.0) & (anchors[:, 2] <= h) & (anchors[:, 3] <= w))


def pairwise_iou(boxes: tf.Tensor, candidates: tf.Tensor) -> tf.Tensor:
    """IoU of ``boxes`` ``[B, M, 4]`` with ``candidates`` ``[B, N, 4]`` (or ``[N, 4]``, shared) -> ``[B, M, N]``."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)[:, :, tf.newaxis, :]
    candidates = tf.convert_to_tensor(candidates, tf.float32)
    if candidates.shape.rank == 2:
        candidates = candidates[tf.newaxis]
    c = candidates[:, tf.newaxis, :, :]
    inter_h = tf.maximum(tf.minimum(boxes[..., 2], c[..., 2]) - tf.maximum(boxes[..., 0], c[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(boxes[..., 3], c[..., 3]) - tf.maximum(boxes[..., 1], c[..., 1]), 0.0)
    inter = inter_h * inter_w
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_c = (c[..., 2] - c[..., 0]) * (c[..., 3] - c[..., 1])
    union = area_b + area_c - inter
    return tf.where(inter > 0, inter / tf.where(union > 0, union, 1.0), 0.0)


def assign_targets(
    candidates: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    weights: tf.Tensor,
    *,
    matcher: ArgmaxMatcher,
    box_coder: Any,
    num_classes: int,
    valid: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Targets of every candidate box.

    Returns ``matches`` ``[B, N]`` (ground-truth index, :data:`UNMATCHED` or :data:`IGNORED`; invalid
    candidates are unmatched); ``cls_targets`` ``[B, N, num_classes + 1]`` one-hot with background in
    slot 0; ``cls_weights`` ``[B, N]`` (the box's weight when matched, 1 for a negative, 0 ignored or
    invalid); ``reg_targets`` ``[B, N, 4]`` (the matched box encoded against the candidate, else 0);
    ``reg_weights`` ``[B, N]`` (the box's weight when matched, else 0). For the RPN pass
    ``num_classes=1`` and all-zero classes: the targets are then background / object.
    """
    candidates = tf.convert_to_tensor(candidates, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    weights = tf.convert_to_tensor(weights, tf.float32)
    batch = tf.shape(boxes)[0]
    if candidates.shape.rank == 2:
        candidates = tf.broadcast_to(candidates[tf.newaxis], tf.stack([batch, tf.shape(candidates)[0], 4]))
    if valid is None:
        valid = tf.ones(tf.shape(candidates)[:2], tf.bool)
    valid = tf.cast(valid, tf.bool)
    # invalid candidates are out of the matching altogether (a forced match goes to the best valid one)
    similarity = tf.where(valid[:, tf.newaxis, :], pairwise_iou(boxes, candidates), -1.0)
    matches = tf.where(valid, matcher.match(similarity, weights > 0), UNMATCHED)
    matched = matches >= 0
    matched_f = tf.cast(matched, tf.float32)
    index = tf.maximum(matches, 0)
    gt_boxes = tf.gather(boxes, index, batch_dims=1)
    reg_targets = box_coder.encode(gt_boxes, candidates) * matched_f[..., tf.newaxis]
    gt_weight = tf.gather(weights, index, batch_dims=1)
    gt_class = tf.gather(tf.cast(classes, tf.int32), index, batch_dims=1)
    label = tf.where(matched, gt_class + 1, 0)
    cls_weights = tf.where(matched, gt_weight, tf.where(matches == IGNORED, 0.0, 1.0))
    cls_weights *= tf.cast(valid, tf.float32)
    return {
        "matches": matches,
        "cls_targets": tf.one_hot(label, num_classes + 1),
        "cls_weights": cls_weights,
        "reg_targets": reg_targets,
        "reg_weights": gt_weight * matched_f,
    }
