"""SSD losses as the ``loss`` block of an ``ssd`` config defines them.

Per anchor: a classification loss over every class slot (background included) and a localization
loss over the 4 box codes, both weighted by the target assigner's weights. Optionally the
``hard_example_miner`` keeps, per image, only the highest-loss anchors (non-maximum suppressed on the
predicted boxes, at most ``max_negatives_per_positive`` negatives per positive). The sums are
divided by the number of matched anchors (``normalize_loss_by_num_matches``, at least 1), the
localization sum also by the code size (``normalize_loc_loss_by_codesize``), and weighted by
``classification_weight`` / ``localization_weight``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow as tf

from ...errors import UnsupportedModelError
from .targets import UNMATCHED

CLASSIFICATION_LOSSES = ("weighted_sigmoid_focal", "weighted_sigmoid", "weighted_softmax")
LOCALIZATION_LOSSES = ("weighted_smooth_l1", "weighted_l2")


@dataclasses.dataclass(frozen=True)
class HardExampleMining:
    """``hard_example_miner`` settings (``None`` counts mean no limit)."""

    num_hard_examples: int | None = 64
    iou_threshold: float = 0.7
    loss_type: str = "both"          # "both" | "classification" | "localization"
    max_negatives_per_positive: float | None = None
    min_negatives_per_image: int = 0

    @classmethod
    def from_config(cls, msg: Any) -> HardExampleMining:
        num = int(msg.get("num_hard_examples", 64))
        ratio = float(msg.get("max_negatives_per_positive", 0))
        return cls(
            num_hard_examples=num if num > 0 else None,
            iou_threshold=float(msg.get("iou_threshold", 0.7)),
            loss_type=str(msg.get("loss_type", "BOTH")).lower(),
            max_negatives_per_positive=ratio if ratio > 0 else None,
            min_negatives_per_image=int(msg.get("min_negatives_per_image", 0)),
        )


@dataclasses.dataclass(frozen=True)
class SsdLossConfig:
    """The loss settings of an ``ssd`` config (defaults: RetinaNet's)."""

    classification: str = "weighted_sigmoid_focal"
    gamma: float = 2.0
    alpha: float | None = 0.25
    logit_scale: float = 1.0
    localization: str = "weighted_smooth_l1"
    delta: float = 1.0
    classification_weight: float = 1.0
    localization_weight: float = 1.0
    normalize_by_num_matches: bool = True
    normalize_loc_by_codesize: bool = False
    hard_example_mining: HardExampleMining | None = None

    @classmethod
    def from_config(cls, ssd: Any) -> SsdLossConfig:
        """Read the ``loss`` block (and normalisation flags) of an ``ssd`` message."""
        loss = ssd["loss"] if "loss" in ssd else None
        if loss is None:
            return cls()
        cls_kind, cls_msg = loss["classification_loss"].oneof() if "classification_loss" in loss else (
            "weighted_sigmoid_focal", None)
        loc_kind, loc_msg = loss["localization_loss"].oneof() if "localization_loss" in loss else (
            "weighted_smooth_l1", None)
        if cls_kind not in CLASSIFICATION_LOSSES:
            raise UnsupportedModelError(f"classification_loss {cls_kind!r} cannot be trained by odzoo "
                                        f"({', '.join(CLASSIFICATION_LOSSES)} can)")
        if loc_kind not in LOCALIZATION_LOSSES:
            raise UnsupportedModelError(f"localization_loss {loc_kind!r} cannot be trained by odzoo "
                                        f"({', '.join(LOCALIZATION_LOSSES)} can)")
        get = (lambda m, k, d: m.get(k, d) if m is not None else d)
        alpha = get(cls_msg, "alpha", None) if cls_kind == "weighted_sigmoid_focal" else None
        return cls(
            classification=cls_kind,
            gamma=float(get(cls_msg, "gamma", 2.0)),
            alpha=None if alpha is None else float(alpha),
            logit_scale=float(get(cls_msg, "logit_scale", 1.0)),
            localization=loc_kind,
            delta=float(get(loc_msg, "delta", 1.0)),
            classification_weight=float(loss.get("classification_weight", 1.0)),
            localization_weight=float(loss.get("localization_weight", 1.0)),
            normalize_by_num_matches=bool(ssd.get("normalize_loss_by_num_matches", True)),
            normalize_loc_by_codesize=bool(ssd.get("normalize_loc_loss_by_codesize", False)),
            hard_example_mining=(HardExampleMining.from_config(loss["hard_example_miner"])
                                 if "hard_example_miner" in loss else None),
        )


# ------------------------------------------------------------------------------ per-anchor losses
def sigmoid_focal_loss(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, *, gamma: float = 2.0,
                       alpha: float | None = 0.25) -> tf.Tensor:
    """``[B, N, C]`` focal loss: ``ce * (1 - p_t)^gamma * (alpha if t else 1 - alpha) * weight``,
    ``p_t`` the probability given to the target; ``weights`` ``[B, N]`` or ``[B, N, C]``."""
    logits = tf.cast(logits, tf.float32)
    targets = tf.cast(targets, tf.float32)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    prob = tf.sigmoid(logits)
    p_t = targets * prob + (1.0 - targets) * (1.0 - prob)
    loss = tf.pow(1.0 - p_t, gamma) * ce
    if alpha is not None:
        loss *= targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return loss * _per_class(weights)


def sigmoid_loss(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``[B, N, C]`` weighted sigmoid cross-entropy."""
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(targets, tf.float32), logits=tf.cast(logits, tf.float32))
    return ce * _per_class(weights)


def softmax_loss(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, *, logit_scale: float = 1.0) -> tf.Tensor:
    """``[B, N]`` weighted softmax cross-entropy of ``logits / logit_scale``."""
    ce = tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(targets, tf.float32),
                                                 logits=tf.cast(logits, tf.float32) / logit_scale)
    return ce * tf.cast(weights, tf.float32)


def smooth_l1_loss(predictions: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor, *, delta: float = 1.0) -> tf.Tensor:
    """``[B, N]`` Huber loss summed over the code: ``0.5 d^2`` for ``|d| <= delta``, else
    ``delta (|d| - 0.5 delta)``; times ``weights`` ``[B, N]``."""
    diff = tf.abs(tf.cast(predictions, tf.float32) - tf.cast(targets, tf.float32))
    huber = tf.where(diff <= delta, 0.5 * tf.square(diff), delta * (diff - 0.5 * delta))
    return tf.reduce_sum(huber, axis=-1) * tf.cast(weights, tf.float32)


def l2_loss(predictions: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``[B, N]`` ``0.5 * sum of squared differences`` times ``weights``."""
    diff = tf.cast(predictions, tf.float32) - tf.cast(targets, tf.float32)
    return 0.5 * tf.reduce_sum(tf.square(diff), axis=-1) * tf.cast(weights, tf.float32)


def _per_class(weights: tf.Tensor) -> tf.Tensor:
    weights = tf.cast(weights, tf.float32)
    return weights[..., tf.newaxis] if weights.shape.rank == 2 else weights


# ------------------------------------------------------------------------------ hard example mining
def mine_image(loc: tf.Tensor, cls: tf.Tensor, boxes: tf.Tensor, matches: tf.Tensor, mining: HardExampleMining,
               classification_weight: float = 1.0, localization_weight: float = 1.0) -> tf.Tensor:
    """Indices of the anchors one image keeps: the highest-loss anchors after NMS on the predicted
    ``boxes`` (at most ``num_hard_examples``), then every positive among them and the first
    ``max(min_negatives_per_image, max_negatives_per_positive * positives)`` negatives (ignored
    anchors are dropped)."""
    if mining.loss_type == "classification":
        ranking = cls * classification_weight
    elif mining.loss_type == "localization":
        ranking = loc * localization_weight
    else:
        ranking = cls * classification_weight + loc * localization_weight
    count = mining.num_hard_examples if mining.num_hard_examples is not None else tf.shape(ranking)[0]
    selected = tf.image.non_max_suppression(boxes, ranking, count, iou_threshold=mining.iou_threshold)
    if mining.max_negatives_per_positive is None:
        return selected
    picked = tf.gather(matches, selected)
    positive = picked >= 0
    negative = picked == UNMATCHED
    num_pos = tf.reduce_sum(tf.cast(positive, tf.float32))
    max_neg = tf.maximum(float(mining.min_negatives_per_image),
                         tf.floor(mining.max_negatives_per_positive * num_pos))
    first_negatives = tf.cast(tf.cumsum(tf.cast(negative, tf.int32)), tf.float32) <= max_neg
    return tf.boolean_mask(selected, positive | (negative & first_negatives))


def mined_sums(loc: tf.Tensor, cls: tf.Tensor, boxes: tf.Tensor, matches: tf.Tensor, mining: HardExampleMining,
               classification_weight: float = 1.0, localization_weight: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
    """Sums over the batch of the localization and classification losses ``[B, N]`` of mined anchors."""
    def one(args: tuple[tf.Tensor, ...]) -> tf.Tensor:
        l, c, b, m = args
        keep = mine_image(l, c, b, m, mining, classification_weight, localization_weight)
        return tf.stack([tf.reduce_sum(tf.gather(l, keep)), tf.reduce_sum(tf.gather(c, keep))])

    sums = tf.map_fn(one, (loc, cls, tf.cast(boxes, tf.float32), matches),
                     fn_output_signature=tf.TensorSpec([2], tf.float32))
    return tf.reduce_sum(sums[:, 0]), tf.reduce_sum(sums[:, 1])


# ------------------------------------------------------------------------------ the SSD loss
def ssd_loss(box_encodings: tf.Tensor, class_logits: tf.Tensor, targets: dict[str, tf.Tensor],
             config: SsdLossConfig, *, decoded_boxes: tf.Tensor | None = None,
             code_size: int = 4) -> dict[str, tf.Tensor]:
    """``localization``, ``classification`` and ``total`` for one batch.

    ``targets`` is :func:`~zoo.train.ssd.targets.assign_targets`' output; ``decoded_boxes``
    ``[B, N, 4]`` (the predicted boxes) are needed for hard example mining.
    """
    loc_losses = (smooth_l1_loss(box_encodings, targets["reg_targets"], targets["reg_weights"], delta=config.delta)
                  if config.localization == "weighted_smooth_l1"
                  else l2_loss(box_encodings, targets["reg_targets"], targets["reg_weights"]))
    if config.classification == "weighted_softmax":
        cls_losses = softmax_loss(class_logits, targets["cls_targets"], targets["cls_weights"],
                                  logit_scale=config.logit_scale)
    else:
        per_class = (sigmoid_focal_loss(class_logits, targets["cls_targets"], targets["cls_weights"],
                                        gamma=config.gamma, alpha=config.alpha)
                     if config.classification == "weighted_sigmoid_focal"
                     else sigmoid_loss(class_logits, targets["cls_targets"], targets["cls_weights"]))
        cls_losses = tf.reduce_sum(per_class, axis=-1)
    if config.hard_example_mining is not None:
        if decoded_boxes is None:
            raise ValueError("hard example mining needs the decoded predicted boxes")
        loc_sum, cls_sum = mined_sums(loc_losses, cls_losses, decoded_boxes, targets["matches"],
                                      config.hard_example_mining, config.classification_weight,
                                      config.localization_weight)
    else:
        loc_sum, cls_sum = tf.reduce_sum(loc_losses), tf.reduce_sum(cls_losses)
    normalizer = (tf.maximum(tf.reduce_sum(targets["reg_weights"]), 1.0) if config.normalize_by_num_matches
                  else tf.constant(1.0))
    loc_normalizer = normalizer * code_size if config.normalize_loc_by_codesize else normalizer
    out = {
        "localization": config.localization_weight * loc_sum / loc_normalizer,
        "classification": config.classification_weight * cls_sum / normalizer,
    }
    out["total"] = out["localization"] + out["classification"]
    return out
