"""The OD API's ``score_converter``: logits (divided by ``logit_scale``) -> scores."""
from __future__ import annotations

import tensorflow as tf

SCORE_CONVERTERS = ("IDENTITY", "SIGMOID", "SOFTMAX")


def convert_scores(logits: tf.Tensor, converter: str, logit_scale: float = 1.0) -> tf.Tensor:
    """Apply ``SIGMOID``, ``SOFTMAX`` (over the last axis) or ``IDENTITY`` to ``logits / logit_scale``."""
    scaled = tf.multiply(logits, 1.0 / logit_scale)
    if converter == "SIGMOID":
        return tf.sigmoid(scaled)
    if converter == "SOFTMAX":
        return tf.nn.softmax(scaled)
    return scaled
