"""The balanced positive/negative sampler of the original (``BalancedPositiveNegativeSampler``).

From the candidates an ``indicator`` allows, at most ``floor(positive_fraction * batch_size)``
positives are drawn at random, then negatives at random to fill the minibatch to ``batch_size``
(fewer when there are not enough). Batched: each row is sampled independently.
"""
from __future__ import annotations

import tensorflow as tf

__all__ = ["balanced_sample", "random_subset"]


def random_subset(indicator: tf.Tensor, count: tf.Tensor, seed: int | None = None) -> tf.Tensor:
    """``[B, N]`` bool: ``min(count[b], sum(indicator[b]))`` entries of each row's ``indicator``, uniformly at
    random (``count`` a scalar or ``[B]``)."""
    indicator = tf.cast(indicator, tf.bool)
    priority = tf.where(indicator, tf.random.uniform(tf.shape(indicator), seed=seed), -1.0)
    order = tf.argsort(priority, axis=1, direction="DESCENDING", stable=True)
    rank = tf.argsort(order, axis=1, stable=True)  # position of each entry in the random order
    count = tf.reshape(tf.cast(count, tf.int32), [-1, 1])
    return indicator & (rank < count)


def balanced_sample(indicator: tf.Tensor, labels: tf.Tensor, batch_size: int, positive_fraction: float,
                    seed: int | None = None) -> tf.Tensor:
    """``[B, N]`` bool minibatch: ``indicator`` the candidates that may be sampled, ``labels`` which are
    positive."""
    if not 0.0 < positive_fraction < 1.0:
        raise ValueError(f"positive_fraction must be in (0, 1), got {positive_fraction}")
    indicator = tf.cast(indicator, tf.bool)
    labels = tf.cast(labels, tf.bool)
    positives = random_subset(indicator & labels, int(positive_fraction * batch_size), seed)
    taken = tf.reduce_sum(tf.cast(positives, tf.int32), axis=1)
    negatives = random_subset(indicator & ~labels, int(batch_size) - taken, seed)
    return positives | negatives
