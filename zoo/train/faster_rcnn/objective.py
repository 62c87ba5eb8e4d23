"""What one Faster R-CNN / Mask R-CNN training step minimises.

As the original trains it: the first stage runs on the batch; anchors are matched to the ground truth
and a balanced minibatch of them gives the RPN losses (without ``clip_anchors_to_image``, only the
anchors wholly inside the input take part, and only they make proposals; with it, all anchors, clipped); the proposals (NMS of the decoded RPN boxes,
clipped to each picture, gradients stopped) are matched to the ground truth at IoU 0.5 and a balanced
minibatch of ``second_stage_batch_size`` of them is cropped and run through the second stage, whose
box and class predictions (and, for Mask R-CNN, the mask head's, on the same proposals) give the
second-stage losses. ``add_regularization_loss`` adds the L2 penalty of the RPN convolution and the
second-stage heads that their hyperparameters configure.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from .losses import FasterRcnnLossConfig, box_classifier_losses, mask_loss, rpn_losses
from .sampling import balanced_sample
from .targets import DETECTION_MATCHER, RPN_MATCHER, assign_targets, inside_image

__all__ = ["FasterRcnnObjective", "regularized_kernels"]


def _l2_weight(hyperparams: Any) -> float:
    if hyperparams is None or "regularizer" not in hyperparams:
        return 0.0
    return float(hyperparams.get("regularizer.l2_regularizer.weight", 0.0))


def regularized_kernels(net: Any, msg: Any) -> list[tuple[Any, float]]:
    """``(kernel, L2 weight)`` of the RPN convolution and heads (``first_stage_box_predictor_conv_hyperparams``),
    the second-stage box/class heads (``fc_hyperparams``) and the mask head (``conv_hyperparams``), where
    the weight is positive."""
    _, bp = msg["second_stage_box_predictor"].oneof()
    groups = [
        ([net.rpn_conv, net.rpn_box_head, net.rpn_class_head], _l2_weight(msg.get("first_stage_box_predictor_conv_hyperparams"))),
        ([net.box_head, net.class_head], _l2_weight(bp.get("fc_hyperparams"))),
        (list(getattr(net, "mask_layers", []) if net.mask_model is not None else []), _l2_weight(bp.get("conv_hyperparams"))),
    ]
    return [(layer.kernel, weight) for layers, weight in groups if weight > 0 for layer in layers]


class FasterRcnnObjective:
    """Losses of a :class:`~zoo.models.faster_rcnn.FasterRCNN` on batches of
    :class:`~zoo.train.faster_rcnn.data.FasterRcnnTrainingData` (``msg``: the ``model.faster_rcnn`` config).

    The mask loss is computed when the model predicts masks and the batch has ``masks``.
    """

    def __init__(self, net: Any, msg: Any, *, add_regularization_loss: bool = True) -> None:
        self.net = net
        self.config = FasterRcnnLossConfig.from_config(msg)
        self.clip_anchors_to_image = bool(msg.get("clip_anchors_to_image", False))
        self._regularized = regularized_kernels(net, msg) if add_regularization_loss else []

    def network_input(self, images: tf.Tensor) -> tf.Tensor:
        """Training images (RGB 0..255 at the input size, zero padding included) -> the network's input,
        as inference normalizes after the resize (the padding becomes the extractor's zero point)."""
        return self.net.feature_extractor.preprocess(tf.cast(images, tf.float32))

    def regularization(self) -> tf.Tensor | None:
        terms = [0.5 * w * tf.reduce_sum(tf.square(v)) for v, w in self._regularized if v.trainable]
        return tf.add_n(terms) if terms else None

    # plain tensor code, as the inference graph runs it: autograph would only spend time rewriting it
    @tf.autograph.experimental.do_not_convert
    def __call__(self, batch: Mapping[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        net, cfg = self.net, self.config
        x = self.network_input(batch["image"])
        shape = tf.shape(x)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        size = tf.stack([height, width, height, width])
        boxes, classes, weights = batch["boxes"], batch["classes"], batch["weights"]

        first = net.first_stage_model(x, training=training)
        features = first["rpn_features_to_crop"]
        encodings, objectness = first["rpn_box_encodings"], first["rpn_objectness_predictions_with_background"]
        grid = tf.shape(features)
        anchors = net.anchors(shape[1], shape[2], grid[1], grid[2])  # clipped to the input
        if self.clip_anchors_to_image:
            usable = tf.ones(tf.shape(anchors)[:1], tf.bool)
        else:
            usable = inside_image(net.anchor_generator.generate(grid[1], grid[2]), shape[1], shape[2])
        rpn = assign_targets(anchors / size, boxes, tf.zeros_like(classes), weights, matcher=RPN_MATCHER,
                             box_coder=net.box_coder, num_classes=1,
                             valid=tf.broadcast_to(usable[tf.newaxis], tf.shape(encodings)[:2]))
        sampled = balanced_sample(rpn["cls_weights"] > 0, rpn["matches"] >= 0, cfg.first_stage_minibatch_size,
                                  cfg.first_stage_positive_balance_fraction)
        losses = rpn_losses(encodings, objectness, rpn, sampled, cfg)

        window = batch.get("window")
        if window is None:
            window = tf.ones(tf.stack([shape[0], 2]))
        true_shapes = tf.concat([tf.round(window * tf.stack([height, width])), tf.fill([shape[0], 1], 3.0)], 1)
        # anchors left out rank below every other in the proposal NMS
        ranked = tf.where(usable[tf.newaxis, :, tf.newaxis], tf.stop_gradient(objectness), [[[0.0, -1e4]]])
        proposals, num = net.proposals(tf.stop_gradient(encodings), ranked, anchors, shape,
                                       tf.cast(true_shapes, tf.int32))
        proposals = tf.stop_gradient(proposals)
        valid = tf.range(tf.shape(proposals)[1])[tf.newaxis] < num[:, tf.newaxis]
        second = assign_targets(proposals, boxes, classes, weights, matcher=DETECTION_MATCHER,
                                box_coder=net.box_coder, num_classes=int(net.num_classes), valid=valid)
        chosen = balanced_sample(second["cls_weights"] > 0, second["matches"] >= 0, cfg.second_stage_batch_size,
                                 cfg.second_stage_balance_fraction)
        # the chosen proposals first (in proposal order), padded to the minibatch size with zero boxes
        count = min(cfg.second_stage_batch_size, int(net.config.max_proposals))
        rank = tf.where(chosen, 0, 1) * tf.shape(chosen)[1] + tf.range(tf.shape(chosen)[1])[tf.newaxis]
        index = tf.argsort(rank, axis=1, stable=True)[:, :count]
        in_batch = tf.gather(chosen, index, batch_dims=1)
        in_batch_f = tf.cast(in_batch, tf.float32)
        picked = tf.gather(proposals, index, batch_dims=1) * in_batch_f[..., tf.newaxis]
        targets = {k: tf.gather(v, index, batch_dims=1) for k, v in second.items()}

        out = net.box_prediction(features, picked, shape, training=training)
        refined = tf.reshape(out["refined_box_encodings"], [-1, count, net.config.num_box_outputs, 4])
        logits = tf.reshape(out["class_predictions_with_background"], [-1, count, int(net.num_classes) + 1])
        losses.update(box_classifier_losses(refined, logits, targets, in_batch, cfg))
        if net.mask_model is not None and "masks" in batch:
            masks = net.mask_model(out["box_classifier_features"], training=training)
            masks = tf.reshape(masks, [-1, count, *masks.shape[1:]])
            losses["mask"] = mask_loss(masks, batch["masks"], batch["mask_weights"], picked, targets, in_batch, cfg)
        reg = self.regularization()
        if reg is not None:
            losses["regularization"] = reg
        losses["total"] = tf.add_n(list(losses.values()))
        return losses
