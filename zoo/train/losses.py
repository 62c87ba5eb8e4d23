"""CenterNet losses: penalty-reduced logistic focal loss on heatmaps, L1 on sparse regressions.

Every loss is summed over the batch and divided by the number of objects in it (at least 1), the
normalisation the CenterNet papers and the zoo's training use. Heads with several stacks (one
prediction per stack) average their stacks. The weights come from the ``center_net`` block of a
``pipeline.config`` (:meth:`LossWeights.from_config`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the CenterNet loss terms (defaults: the zoo's object-detection configs)."""

    task: float = 1.0
    object_center: float = 1.0
    scale: float = 0.1
    offset: float = 1.0
    alpha: float = 2.0
    beta: float = 4.0
    keypoint_heatmap: float = 1.0
    keypoint_offset: float = 1.0
    keypoint_regression: float = 0.1
    min_box_overlap_iou: float = 0.7

    @classmethod
    def from_config(cls, center_net: Any) -> LossWeights:
        """Read the weights from a ``center_net`` :class:`~zoo.pipeline_config.Message`."""
        d = cls()
        get = center_net.get
        focal = "object_center_params.classification_loss.penalty_reduced_logistic_focal_loss"
        kp = "keypoint_estimation_task"
        return cls(
            task=float(get("object_detection_task.task_loss_weight", d.task)),
            object_center=float(get("object_center_params.object_center_loss_weight", d.object_center)),
            scale=float(get("object_detection_task.scale_loss_weight", d.scale)),
            offset=float(get("object_detection_task.offset_loss_weight", d.offset)),
            alpha=float(get(focal + ".alpha", d.alpha)),
            beta=float(get(focal + ".beta", d.beta)),
            keypoint_heatmap=float(get(kp + ".keypoint_heatmap_loss_weight", d.keypoint_heatmap)),
            keypoint_offset=float(get(kp + ".keypoint_offset_loss_weight", d.keypoint_offset)),
            keypoint_regression=float(get(kp + ".keypoint_regression_loss_weight", d.keypoint_regression)),
            min_box_overlap_iou=float(get("object_center_params.min_box_overlap_iou", d.min_box_overlap_iou)),
        )


def focal_loss_sum(logits: tf.Tensor, target: tf.Tensor, alpha: float = 2.0, beta: float = 4.0) -> tf.Tensor:
    """Penalty-reduced logistic focal loss, summed over every element.

    Cells whose target is exactly 1 are positives: ``-(1-p)^alpha log p``. All others are negatives
    whose penalty shrinks near a peak: ``-(1-t)^beta p^alpha log(1-p)``; ``p = sigmoid(logits)``.
    """
    logits = tf.cast(logits, tf.float32)
    target = tf.cast(target, tf.float32)
    prob = tf.sigmoid(logits)
    log_p = tf.math.log_sigmoid(logits)
    log_not_p = tf.math.log_sigmoid(-logits)
    positive = tf.cast(tf.equal(target, 1.0), tf.float32)
    pos = -tf.pow(1.0 - prob, alpha) * log_p
    neg = -tf.pow(1.0 - target, beta) * tf.pow(prob, alpha) * log_not_p
    return tf.reduce_sum(positive * pos + (1.0 - positive) * neg)


def gather_at(prediction: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Values of ``prediction`` ``[B, H, W, C]`` at ``indices`` ``[B, ..., 2]`` (row, col) -> ``[B, ..., C]``."""
    return tf.gather_nd(prediction, tf.cast(indices, tf.int32), batch_dims=1)


def l1_loss_sum(prediction: tf.Tensor, indices: tf.Tensor, target: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Weighted L1 between a dense prediction read at ``indices`` and a sparse ``target``, summed."""
    picked = tf.cast(gather_at(prediction, indices), tf.float32)
    diff = tf.reduce_sum(tf.abs(picked - tf.cast(target, tf.float32)), axis=-1)
    return tf.reduce_sum(diff * tf.cast(weights, tf.float32))


def _stacks(value: Any) -> Sequence[tf.Tensor]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _mean_over_stacks(fn: Any, value: Any) -> tf.Tensor:
    stacks = _stacks(value)
    return tf.add_n([fn(p) for p in stacks]) / float(len(stacks))


def centernet_loss(
    predictions: Mapping[str, Any],
    targets: Mapping[str, tf.Tensor],
    weights: LossWeights = LossWeights(),
    *,
    num_objects: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """All CenterNet loss terms plus ``total``.

    ``predictions`` holds the head outputs by name (``object_center`` logits, ``box/scale``,
    ``box/offset``; optionally ``keypoint/heatmap``, ``keypoint/offset``, ``keypoint/regression``),
    each a tensor or a list (one per stack). ``targets`` holds batched
    :class:`~zoo.train.targets.CenterNetTargets` fields. ``num_objects`` overrides the normaliser
    (useful to normalise by the global batch under a distribution strategy).
    """
    box_w = tf.cast(targets["weights"], tf.float32)
    norm = tf.reduce_sum(box_w) if num_objects is None else tf.cast(num_objects, tf.float32)
    norm = tf.maximum(norm, 1.0)
    out: dict[str, tf.Tensor] = {}
    out["object_center"] = weights.object_center * _mean_over_stacks(
        lambda p: focal_loss_sum(p, targets["heatmap"], weights.alpha, weights.beta), predictions["object_center"]) / norm
    out["box/scale"] = weights.scale * _mean_over_stacks(
        lambda p: l1_loss_sum(p, targets["indices"], targets["scale"], box_w), predictions["box/scale"]) / norm
    out["box/offset"] = weights.offset * _mean_over_stacks(
        lambda p: l1_loss_sum(p, targets["indices"], targets["offset"], box_w), predictions["box/offset"]) / norm
    total = weights.task * (out["object_center"] + out["box/scale"] + out["box/offset"])

    if "keypoint_heatmap" in targets and "keypoint/heatmap" in predictions:
        kp_w = tf.cast(targets["keypoint_weights"], tf.float32)
        kp_norm = tf.maximum(tf.reduce_sum(kp_w), 1.0)
        out["keypoint/heatmap"] = weights.keypoint_heatmap * _mean_over_stacks(
            lambda p: focal_loss_sum(p, targets["keypoint_heatmap"], weights.alpha, weights.beta),
            predictions["keypoint/heatmap"]) / kp_norm
        terms = out["keypoint/heatmap"]
        if "keypoint/offset" in predictions:
            out["keypoint/offset"] = weights.keypoint_offset * _mean_over_stacks(
                lambda p: _keypoint_l1(p, targets["keypoint_indices"], targets["keypoint_offset"], kp_w, True),
                predictions["keypoint/offset"]) / kp_norm
            terms += out["keypoint/offset"]
        if "keypoint/regression" in predictions:
            out["keypoint/regression"] = weights.keypoint_regression * _mean_over_stacks(
                lambda p: _keypoint_l1(p, targets["indices"], targets["keypoint_regression"], kp_w, False),
                predictions["keypoint/regression"]) / kp_norm
            terms += out["keypoint/regression"]
        total = total + terms
    out["total"] = total
    return out


def _keypoint_l1(prediction: tf.Tensor, indices: tf.Tensor, target: tf.Tensor, weights: tf.Tensor,
                 per_keypoint_cell: bool) -> tf.Tensor:
    """L1 for keypoint heads whose channels are ``(dy, dx)`` per keypoint type.

    ``per_keypoint_cell``: read each keypoint's own cell (offsets, indices ``[B, M, K, 2]``);
    otherwise read the object's centre cell (regression, indices ``[B, M, 2]``).
    """
    num_kp = tf.shape(target)[2]
    if per_keypoint_cell and prediction.shape[-1] == 2:  # one offset shared by all keypoint types
        picked = gather_at(prediction, indices)                  # [B, M, K, 2]
    elif per_keypoint_cell:
        picked = gather_at(prediction, indices)                  # [B, M, K, 2K]
        picked = tf.reshape(picked, tf.concat([tf.shape(picked)[:3], [num_kp, 2]], 0))
        picked = tf.linalg.diag_part(tf.transpose(picked, [0, 1, 4, 2, 3]))  # [B, M, 2, K]
        picked = tf.transpose(picked, [0, 1, 3, 2])
    else:
        picked = gather_at(prediction, indices)                  # [B, M, 2K]
        picked = tf.reshape(picked, tf.shape(target))
    diff = tf.reduce_sum(tf.abs(tf.cast(picked, tf.float32) - tf.cast(target, tf.float32)), axis=-1)
    return tf.reduce_sum(diff * weights)
