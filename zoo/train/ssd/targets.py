"""SSD training targets: match anchors to ground-truth boxes and encode what each anchor should predict.

Everything is batched TensorFlow so targets are computed in the training graph against the anchors
the model generates. Ground truth is padded: ``boxes`` ``[B, M, 4]`` normalized ``(ymin, xmin, ymax,
xmax)``, ``classes`` ``[B, M]`` 0-based, ``weights`` ``[B, M]`` (0 marks padding).

Matching follows the ``argmax_matcher`` of a pipeline.config: each anchor takes the box it overlaps
most (IoU); it is *matched* when that IoU reaches ``matched_threshold``, *unmatched* (background)
below ``unmatched_threshold`` and *ignored* in between (with ``negatives_lower_than_unmatched``;
otherwise the two bands swap roles). ``force_match_for_each_row`` then gives every box the anchor it
overlaps most, whatever the thresholds. Match results per anchor: the box index, ``-1`` unmatched,
``-2`` ignored. (``use_matmul_gather`` only changes how the original gathers on TPUs; the result
is the same.)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from ...errors import ConfigError, UnsupportedModelError

UNMATCHED = -1
IGNORED = -2


@dataclasses.dataclass(frozen=True)
class ArgmaxMatcher:
    """``argmax_matcher`` settings. ``matched_threshold=None`` (``ignore_thresholds``) matches every
    anchor to its best box."""

    matched_threshold: float | None = 0.5
    unmatched_threshold: float | None = 0.5
    negatives_lower_than_unmatched: bool = True
    force_match_for_each_row: bool = False
    use_matmul_gather: bool = False

    def __post_init__(self) -> None:
        m, u = self.matched_threshold, self.unmatched_threshold
        if m is None:
            return
        if u is None:
            object.__setattr__(self, "unmatched_threshold", m)
            u = m
        if u > m:
            raise ConfigError(f"argmax_matcher.unmatched_threshold ({u}) must not exceed matched_threshold ({m})")
        if u == m and not self.negatives_lower_than_unmatched:
            raise ConfigError("argmax_matcher: with negatives_lower_than_unmatched false the matched and unmatched "
                              "thresholds must differ")

    @classmethod
    def from_config(cls, matcher: Any) -> ArgmaxMatcher:
        """From the ``matcher`` message of an ``ssd`` config."""
        kind, msg = matcher.oneof()
        if kind != "argmax_matcher":
            raise UnsupportedModelError(f"matcher {kind!r} cannot be trained by odzoo (argmax_matcher can)")
        ignore = bool(msg.get("ignore_thresholds", False))
        return cls(
            matched_threshold=None if ignore else float(msg.get("matched_threshold", 0.5)),
            unmatched_threshold=None if ignore else float(msg.get("unmatched_threshold", 0.5)),
            negatives_lower_than_unmatched=bool(msg.get("negatives_lower_than_unmatched", True)),
            force_match_for_each_row=bool(msg.get("force_match_for_each_row", False)),
            use_matmul_gather=bool(msg.get("use_matmul_gather", False)),
        )

    def match(self, similarity: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
        """``similarity`` ``[B, M, N]`` (boxes x anchors), ``valid`` ``[B, M]`` bool -> ``[B, N]`` int32
        matches (box index, ``-1`` unmatched, ``-2`` ignored)."""
        similarity = tf.convert_to_tensor(similarity, tf.float32)
        valid = tf.cast(valid, tf.bool)
        # padded boxes never win an anchor
        masked = tf.where(valid[:, :, tf.newaxis], similarity, -1.0)
        matches = tf.argmax(masked, axis=1, output_type=tf.int32)
        best = tf.reduce_max(masked, axis=1)
        if self.matched_threshold is not None:
            below = best < self.unmatched_threshold
            between = (best >= self.unmatched_threshold) & (best < self.matched_threshold)
            low, middle = (UNMATCHED, IGNORED) if self.negatives_lower_than_unmatched else (IGNORED, UNMATCHED)
            matches = tf.where(below, low, tf.where(between, middle, matches))
        if self.force_match_for_each_row:
            num_anchors = tf.shape(similarity)[2]
            best_anchor = tf.argmax(masked, axis=2, output_type=tf.int32)                 # [B, M]
            forced = tf.one_hot(best_anchor, num_anchors) * tf.cast(valid, tf.float32)[:, :, tf.newaxis]
            forced_row = tf.argmax(forced, axis=1, output_type=tf.int32)                # first box wins a tie
            matches = tf.where(tf.reduce_max(forced, axis=1) > 0, forced_row, matches)
        any_valid = tf.reduce_any(valid, axis=1, keepdims=True)
        return tf.where(any_valid, matches, UNMATCHED)


def iou(boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """Pairwise IoU of ``boxes`` ``[B, M, 4]`` and ``anchors`` ``[N, 4]`` -> ``[B, M, N]`` (0 where they
    do not intersect)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)[:, :, tf.newaxis, :]
    anchors = tf.convert_to_tensor(anchors, tf.float32)[tf.newaxis, tf.newaxis, :, :]
    ymin = tf.maximum(boxes[..., 0], anchors[..., 0])
    xmin = tf.maximum(boxes[..., 1], anchors[..., 1])
    ymax = tf.minimum(boxes[..., 2], anchors[..., 2])
    xmax = tf.minimum(boxes[..., 3], anchors[..., 3])
    inter = tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)
    area_b = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    area_a = (anchors[..., 2] - anchors[..., 0]) * (anchors[..., 3] - anchors[..., 1])
    union = area_b + area_a - inter
    return tf.where(inter > 0, inter / tf.where(union > 0, union, 1.0), 0.0)


def assign_targets(
    anchors: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    weights: tf.Tensor,
    *,
    num_classes: int,
    matcher: ArgmaxMatcher,
    box_coder: Any,
    add_background_class: bool = True,
    encode_background_as_zeros: bool = False,
) -> dict[str, tf.Tensor]:
    """Targets of every anchor for a padded batch of ground truth.

    Returns ``matches`` ``[B, N]``; ``cls_targets`` ``[B, N, C]`` (one-hot of the matched box's class,
    with a leading background slot when ``add_background_class``; unmatched and ignored anchors get
    the background label: one in that slot, or all zeros without it or with
    ``encode_background_as_zeros``, as the zoo's configs ask); ``cls_weights`` ``[B, N]`` (the box's weight
    when matched, 1 unmatched, 0 ignored); ``reg_targets`` ``[B, N, 4]`` (the box encoded against
    the anchor with ``box_coder``, zeros elsewhere) and ``reg_weights`` ``[B, N]`` (the box's weight
    when matched, else 0).
    """
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    weights = tf.convert_to_tensor(weights, tf.float32)
    valid = weights > 0
    matches = matcher.match(iou(boxes, anchors), valid)
    matched = matches >= 0
    index = tf.maximum(matches, 0)
    matched_f = tf.cast(matched, tf.float32)

    gt_boxes = tf.gather(boxes, index, batch_dims=1)                                # [B, N, 4]
    batch = tf.shape(boxes)[0]
    tiled = tf.broadcast_to(anchors[tf.newaxis], tf.stack([batch, tf.shape(anchors)[0], 4]))
    codes = box_coder.encode(gt_boxes, tiled)
    reg_targets = codes * matched_f[..., tf.newaxis]
    gt_weight = tf.gather(weights, index, batch_dims=1)
    reg_weights = gt_weight * matched_f

    gt_class = tf.gather(tf.cast(classes, tf.int32), index, batch_dims=1)
    offset = 1 if add_background_class else 0
    slots = num_classes + offset
    one_hot = tf.one_hot(gt_class + offset, slots) * matched_f[..., tf.newaxis]
    if add_background_class and not encode_background_as_zeros:
        background = tf.one_hot(tf.zeros_like(gt_class), slots) * (1.0 - matched_f)[..., tf.newaxis]
        one_hot += background
    cls_weights = tf.where(matched, gt_weight, tf.where(matches == IGNORED, 0.0, 1.0))
    return {"matches": matches, "cls_targets": one_hot, "cls_weights": cls_weights,
            "reg_targets": reg_targets, "reg_weights": reg_weights}
