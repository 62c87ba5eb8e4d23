"""Faster R-CNN losses as a ``faster_rcnn`` config defines them.

First stage (RPN), per image, over the anchors of the sampled minibatch (``first_stage_minibatch_size``
anchors, ``first_stage_positive_balance_fraction`` of them positive at most): softmax objectness
cross-entropy and smooth-L1 (delta 1) of the positives' box codes, each summed and divided by the
number of sampled anchors, averaged over the batch, times ``first_stage_objectness_loss_weight`` /
``first_stage_localization_loss_weight``.

Second stage, over the sampled proposals (``second_stage_batch_size``, at most
``second_stage_balance_fraction`` positive): the ``second_stage_classification_loss`` (weighted
softmax by default) over background + classes, and smooth-L1 of the refined box of the proposal's
ground-truth class, each divided by the image's number of sampled proposals times the batch size and
summed, times the configured weights. Mask R-CNN adds, for the positive proposals, sigmoid
cross-entropy of the mask of the ground-truth class against the matched ground-truth mask cropped to
the proposal at the mask head's resolution, divided per image by the mask size times the number of
positives and summed over the batch, times ``second_stage_mask_prediction_loss_weight``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from ...errors import ConfigError, UnsupportedModelError
from ..ssd.losses import sigmoid_focal_loss, sigmoid_loss, smooth_l1_loss, softmax_loss

__all__ = ["FasterRcnnLossConfig", "box_classifier_losses", "mask_loss", "rpn_losses"]

SECOND_STAGE_CLASSIFICATION_LOSSES = ("weighted_softmax", "weighted_sigmoid", "weighted_sigmoid_focal")


@dataclasses.dataclass(frozen=True)
class FasterRcnnLossConfig:
    """The training settings of a ``faster_rcnn`` config (protobuf defaults)."""

    first_stage_minibatch_size: int = 256
    first_stage_positive_balance_fraction: float = 0.5
    first_stage_localization_loss_weight: float = 1.0
    first_stage_objectness_loss_weight: float = 1.0
    second_stage_batch_size: int = 64
    second_stage_balance_fraction: float = 0.25
    second_stage_localization_loss_weight: float = 1.0
    second_stage_classification_loss_weight: float = 1.0
    second_stage_mask_prediction_loss_weight: float = 1.0
    classification: str = "weighted_softmax"
    logit_scale: float = 1.0
    gamma: float = 2.0
    alpha: float | None = None

    def __post_init__(self) -> None:
        for name in ("first_stage_minibatch_size", "second_stage_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"faster_rcnn.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("first_stage_positive_balance_fraction", "second_stage_balance_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"faster_rcnn.{name} must be between 0 and 1, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, msg: Any) -> FasterRcnnLossConfig:
        """Read a ``model.faster_rcnn`` message."""
        if "hard_example_miner" in msg:
            raise UnsupportedModelError("faster_rcnn.hard_example_miner cannot be trained by odzoo yet "
                                        "(remove it to sample the second stage minibatch)")
        kind, loss = ("weighted_softmax", None)
        if "second_stage_classification_loss" in msg:
            kind, loss = msg["second_stage_classification_loss"].oneof()
        if kind not in SECOND_STAGE_CLASSIFICATION_LOSSES:
            raise UnsupportedModelError(f"second_stage_classification_loss {kind!r} cannot be trained by odzoo "
                                        f"({', '.join(SECOND_STAGE_CLASSIFICATION_LOSSES)} can)")
        get = (lambda k, d: loss.get(k, d) if loss is not None else d)
        alpha = get("alpha", None) if kind == "weighted_sigmoid_focal" else None
        number = (lambda k, d: float(msg.get(k, d)))
        return cls(
            first_stage_minibatch_size=int(msg.get("first_stage_minibatch_size", 256)),
            first_stage_positive_balance_fraction=number("first_stage_positive_balance_fraction", 0.5),
            first_stage_localization_loss_weight=number("first_stage_localization_loss_weight", 1.0),
            first_stage_objectness_loss_weight=number("first_stage_objectness_loss_weight", 1.0),
            second_stage_batch_size=int(msg.get("second_stage_batch_size", 64)),
            second_stage_balance_fraction=number("second_stage_balance_fraction", 0.25),
            second_stage_localization_loss_weight=number("second_stage_localization_loss_weight", 1.0),
            second_stage_classification_loss_weight=number("second_stage_classification_loss_weight", 1.0),
            second_stage_mask_prediction_loss_weight=number("second_stage_mask_prediction_loss_weight", 1.0),
            classification=kind,
            logit_scale=float(get("logit_scale", 1.0)),
            gamma=float(get("gamma", 2.0)),
            alpha=None if alpha is None else float(alpha),
        )


def rpn_losses(box_encodings: tf.Tensor, objectness_logits: tf.Tensor, targets: dict[str, tf.Tensor],
               sampled: tf.Tensor, config: FasterRcnnLossConfig) -> dict[str, tf.Tensor]:
    """``rpn_localization`` and ``rpn_objectness`` from the RPN outputs ``[B, N, 4]`` / ``[B, N, 2]``, the
    anchor targets (:func:`~zoo.train.faster_rcnn.targets.assign_targets` with one class) and the
    sampled minibatch ``[B, N]``."""
    sampled = tf.cast(sampled, tf.float32)
    normalizer = tf.maximum(tf.reduce_sum(sampled, axis=1), 1.0)
    loc = smooth_l1_loss(box_encodings, targets["reg_targets"], sampled * targets["reg_weights"])
    obj = softmax_loss(objectness_logits, targets["cls_targets"], sampled)
    return {
        "rpn_localization": config.first_stage_localization_loss_weight
        * tf.reduce_mean(tf.reduce_sum(loc, axis=1) / normalizer),
        "rpn_objectness": config.first_stage_objectness_loss_weight
        * tf.reduce_mean(tf.reduce_sum(obj, axis=1) / normalizer),
    }


def class_refined_boxes(refined: tf.Tensor, cls_targets: tf.Tensor) -> tf.Tensor:
    """``[B, S, q, 4]`` refined encodings -> ``[B, S, 4]``: each proposal's box for its target class
    (the only one when boxes are shared across classes; class 0's for background, which has no weight)."""
    if refined.shape[2] == 1:
        return refined[:, :, 0]
    target_class = tf.maximum(tf.argmax(cls_targets, axis=-1, output_type=tf.int32) - 1, 0)
    return tf.gather(refined, target_class, axis=2, batch_dims=2)


def box_classifier_losses(refined: tf.Tensor, logits: tf.Tensor, targets: dict[str, tf.Tensor],
                          in_batch: tf.Tensor, config: FasterRcnnLossConfig) -> dict[str, tf.Tensor]:
    """``box_localization`` and ``box_classification`` of the sampled proposals: ``refined`` ``[B, S, q, 4]``,
    ``logits`` ``[B, S, K + 1]``, their targets and ``in_batch`` ``[B, S]`` (0 for padding rows)."""
    in_batch = tf.cast(in_batch, tf.float32)
    batch = tf.cast(tf.shape(in_batch)[0], tf.float32)
    per_image = tf.maximum(tf.reduce_sum(in_batch, axis=1, keepdims=True), 1.0) * batch
    loc = smooth_l1_loss(class_refined_boxes(refined, targets["cls_targets"]), targets["reg_targets"],
                         targets["reg_weights"] * in_batch)
    weights = targets["cls_weights"] * in_batch
    if config.classification == "weighted_softmax":
        cls = softmax_loss(logits, targets["cls_targets"], weights, logit_scale=config.logit_scale)
    elif config.classification == "weighted_sigmoid":
        cls = tf.reduce_sum(sigmoid_loss(logits, targets["cls_targets"], weights), axis=-1)
    else:
        cls = tf.reduce_sum(sigmoid_focal_loss(logits, targets["cls_targets"], weights, gamma=config.gamma,
                                               alpha=config.alpha), axis=-1)
    return {
        "box_localization": config.second_stage_localization_loss_weight * tf.reduce_sum(loc / per_image),
        "box_classification": config.second_stage_classification_loss_weight * tf.reduce_sum(cls / per_image),
    }


def mask_loss(mask_logits: tf.Tensor, gt_masks: tf.Tensor, gt_mask_weights: tf.Tensor, proposals: tf.Tensor,
              targets: dict[str, tf.Tensor], in_batch: tf.Tensor, config: FasterRcnnLossConfig) -> tf.Tensor:
    """The mask loss of the sampled proposals.

    ``mask_logits`` ``[B, S, h, w, num_masks]`` (the mask head's output); ``gt_masks`` ``[B, M, H, W]``
    (any dtype, 1 inside the object) at the network input's size and ``gt_mask_weights`` ``[B, M]``
    (0 for a box without a mask); ``proposals`` ``[B, S, 4]`` normalized to the input.
    """
    shape = tf.shape(mask_logits)
    batch, size, height, width = shape[0], shape[1], mask_logits.shape[2], mask_logits.shape[3]
    if mask_logits.shape[-1] == 1:
        chosen = mask_logits[..., 0]
    else:
        target_class = tf.maximum(tf.argmax(targets["cls_targets"], axis=-1, output_type=tf.int32) - 1, 0)
        chosen = tf.gather(tf.transpose(mask_logits, [0, 1, 4, 2, 3]), target_class, axis=2, batch_dims=2)
    matched = tf.maximum(targets["matches"], 0)
    num_gt = tf.shape(gt_masks)[1]
    flat_masks = tf.reshape(gt_masks, tf.concat([[-1], tf.shape(gt_masks)[2:], [1]], 0))
    mask_index = tf.reshape(tf.range(batch)[:, tf.newaxis] * num_gt + matched, [-1])
    crops = tf.image.crop_and_resize(flat_masks, tf.reshape(proposals, [-1, 4]), mask_index, [height, width])
    crops = tf.reshape(crops, tf.stack([batch, size, height, width]))
    weights = (targets["reg_weights"] * tf.cast(in_batch, tf.float32)
               * tf.gather(tf.cast(gt_mask_weights, tf.float32), matched, batch_dims=1))
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(crops, tf.float32), logits=tf.cast(chosen, tf.float32))
    per_proposal = tf.reduce_sum(ce, axis=[2, 3]) * weights
    normalizer = float(height * width) * tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
    return config.second_stage_mask_prediction_loss_weight * tf.reduce_sum(per_proposal / normalizer)
