"""What one SSD training step minimises: predictions -> in-graph anchor targets -> the config's losses
(plus the config's L2 weight regularisation of the trainable convolution kernels)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from ...errors import ConfigError
from .losses import SsdLossConfig, ssd_loss
from .targets import ArgmaxMatcher, assign_targets

_BOX_ENCODINGS = "box_encodings"
_CLASS_PREDICTIONS = "class_predictions_with_background"
_FE_PREFIX = "model/_feature_extractor/"
_BP_PREFIX = "model/_box_predictor/"
_KERNELS = ("/kernel", "/depthwise_kernel", "/pointwise_kernel")


def _l2_weight(hyperparams: Any) -> float:
    """``conv_hyperparams.regularizer.l2_regularizer.weight`` (0 when absent or not L2)."""
    if hyperparams is None or "regularizer" not in hyperparams:
        return 0.0
    return float(hyperparams.get("regularizer.l2_regularizer.weight", 0.0))


def regularization_weights(net: Any, ssd: Any) -> dict[int, tuple[Any, float]]:
    """``{id(variable): (variable, weight)}`` for every convolution kernel with an L2 regulariser:
    the feature extractor's and the box predictor's ``conv_hyperparams`` weights (applied as
    ``0.5 * weight * sum(w^2)``, the original's Keras regulariser)."""
    fe = ssd["feature_extractor"] if "feature_extractor" in ssd else None
    _, bp = ssd["box_predictor"].oneof()
    weights = {_FE_PREFIX: _l2_weight(fe["conv_hyperparams"] if fe is not None and "conv_hyperparams" in fe else None),
               _BP_PREFIX: _l2_weight(bp["conv_hyperparams"] if "conv_hyperparams" in bp else None)}
    out: dict[int, tuple[Any, float]] = {}
    for key, variable in net.checkpoint_map().items():
        if not key.endswith(_KERNELS):
            continue
        for prefix, weight in weights.items():
            if key.startswith(prefix) and weight > 0:
                out[id(variable)] = (variable, weight)
    return out


class SsdObjective:
    """Losses of an :class:`~zoo.models.ssd.SSD` on a batch of :class:`~zoo.train.ssd.data.BoxTrainingData`.

    ``ssd`` is the model's ``model.ssd`` config message: matcher, box coder (the network's own),
    losses, normalisation and (``add_regularization_loss``) L2 regularisation.
    """

    def __init__(self, net: Any, ssd: Any, *, add_regularization_loss: bool = True) -> None:
        if "matcher" not in ssd:
            raise ConfigError("the ssd config has no matcher block; it is needed to train")
        similarity = ssd.get("similarity_calculator")
        if similarity is not None and similarity.keys() and similarity.oneof()[0] != "iou_similarity":
            raise ConfigError(f"similarity_calculator {similarity.oneof()[0]!r} cannot be trained by odzoo "
                              "(iou_similarity can)")
        self.net = net
        self.matcher = ArgmaxMatcher.from_config(ssd["matcher"])
        self.loss_config = SsdLossConfig.from_config(ssd)
        if net.config.explicit_background_class:
            raise ConfigError("explicit_background_class cannot be trained by odzoo (add_background_class can)")
        self.add_background_class = bool(net.config.add_background_class)
        self.background_as_zeros = bool(ssd.get("encode_background_as_zeros", False))
        bp = net.config.box_predictor
        self.outputs_probabilities = bp.score_converter == "SIGMOID" or bp.apply_sigmoid_to_scores
        self._regularized = regularization_weights(net, ssd) if add_regularization_loss else {}

    def network_input(self, images: tf.Tensor, window: tf.Tensor | None = None) -> tf.Tensor:
        """Training images (RGB 0..255, already at the input size) -> the network's input.

        ``window`` ``[B, 2]``: the covered fraction of height and width; the padding beyond it is
        set to 0 after normalization, as the model's own preprocessing (normalize, then pad) has it.
        """
        x = self.net.preprocess(images)[0]
        if window is None:
            return x
        shape = tf.shape(x)
        rows = (tf.cast(tf.range(shape[1]), tf.float32) + 0.5) / tf.cast(shape[1], tf.float32)
        cols = (tf.cast(tf.range(shape[2]), tf.float32) + 0.5) / tf.cast(shape[2], tf.float32)
        window = tf.cast(window, tf.float32)
        inside = ((rows[tf.newaxis, :, tf.newaxis] < window[:, 0, tf.newaxis, tf.newaxis])
                  & (cols[tf.newaxis, tf.newaxis, :] < window[:, 1, tf.newaxis, tf.newaxis]))
        return x * tf.cast(inside, x.dtype)[..., tf.newaxis]

    def regularization(self) -> tf.Tensor | None:
        """``sum(0.5 * weight * ||kernel||^2)`` over the trainable regularised kernels, or None."""
        terms = [0.5 * w * tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                 for v, w in self._regularized.values() if v.trainable]
        return tf.add_n(terms) if terms else None

    def __call__(self, batch: Mapping[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        net = self.net
        preds = net.predict(self.network_input(batch["image"], batch.get("window")), training=training)
        logits = preds[_CLASS_PREDICTIONS]
        if self.outputs_probabilities:  # the box predictor applied a sigmoid: back to logits
            p = tf.clip_by_value(tf.cast(logits, tf.float32), 1e-7, 1.0 - 1e-7)
            logits = tf.math.log(p) - tf.math.log1p(-p)
        anchors = preds["anchors"]
        targets = assign_targets(anchors, batch["boxes"], batch["classes"], batch["weights"],
                                 num_classes=int(net.num_classes), matcher=self.matcher, box_coder=net.box_coder,
                                 add_background_class=self.add_background_class,
                                 encode_background_as_zeros=self.background_as_zeros)
        decoded = None
        if self.loss_config.hard_example_mining is not None:
            decoded = net.box_coder.decode(preds[_BOX_ENCODINGS], anchors[tf.newaxis])
        losses = ssd_loss(preds[_BOX_ENCODINGS], logits, targets, self.loss_config, decoded_boxes=decoded,
                          code_size=int(net.box_coder.code_size))
        reg = self.regularization()
        if reg is not None:
            losses["regularization"] = reg
            losses["total"] = losses["total"] + reg
        return losses
