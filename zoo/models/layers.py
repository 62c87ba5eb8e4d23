"""Helpers shared by the CenterNet backbones (Keras 3).

* :func:`make_divisible` - MobileNet's channel rounding.
* :func:`channel_normalize` - the generic CenterNet extractor preprocessing (optional RGB->BGR swap,
  then per-channel mean / std), as pure TensorFlow ops.
* :func:`feature_extractor_options` - the ``feature_extractor`` fields every CenterNet extractor reads.
* :func:`variable_attributes` - ``(checkpoint attribute, variable)`` pairs of a weighted layer, using
  the attribute names Keras 2 wrote into checkpoints.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = [
    "channel_normalize",
    "feature_extractor_options",
    "make_divisible",
    "variable_attributes",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def channel_normalize(
    images: tf.Tensor,
    means: Sequence[float] = (0.0, 0.0, 0.0),
    stds: Sequence[float] = (1.0, 1.0, 1.0),
    bgr_ordering: bool = False,
) -> tf.Tensor:
    """``(images[..., ::-1] if bgr_ordering else images) - means) / stds`` on a ``[B,H,W,3]`` tensor."""
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    if bgr_ordering:
        images = tf.reverse(images, axis=[3])
    mean = tf.reshape(tf.constant(list(means), dtype=tf.float32), [1, 1, 1, -1])
    std = tf.reshape(tf.constant(list(stds), dtype=tf.float32), [1, 1, 1, -1])
    return (images - mean) / std


def _three_floats(values: list[Any], field: str, default: float) -> tuple[float, float, float]:
    if not values:
        return (default, default, default)
    if len(values) != 3:
        raise ConfigError(
            f"feature_extractor.{field} must list 3 values (one per RGB channel), got {len(values)}: {values}"
        )
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def feature_extractor_options(config: Message | None) -> dict[str, Any]:
    """The generic CenterNet ``feature_extractor`` fields, with the original's defaults.

    Returns ``type``, ``channel_means`` (default 0s), ``channel_stds`` (default 1s), ``bgr_ordering``
    (False), ``depth_multiplier`` (1.0), ``use_separable_conv`` (False), ``use_depthwise`` (False) and
    ``upsampling_interpolation`` ("nearest").
    """
    get = (lambda name, default: config.get(name, default)) if config is not None else (lambda n, d: d)
    all_ = (lambda name: config.all(name)) if config is not None else (lambda n: [])
    options = {
        "type": str(get("type", "")),
        "channel_means": _three_floats(all_("channel_means"), "channel_means", 0.0),
        "channel_stds": _three_floats(all_("channel_stds"), "channel_stds", 1.0),
        "bgr_ordering": bool(get("bgr_ordering", False)),
        "depth_multiplier": float(get("depth_multiplier", 1.0)),
        "use_separable_conv": bool(get("use_separable_conv", False)),
        "use_depthwise": bool(get("use_depthwise", False)),
        "upsampling_interpolation": str(get("upsampling_interpolation", "nearest")).lower(),
    }
    if any(s == 0 for s in options["channel_stds"]):
        raise ConfigError(f"feature_extractor.channel_stds must be non-zero, got {options['channel_stds']}")
    if options["depth_multiplier"] <= 0:
        raise ConfigError(
            f"feature_extractor.depth_multiplier must be positive, got {options['depth_multiplier']}"
        )
    if options["upsampling_interpolation"] not in ("nearest", "bilinear"):
        raise ConfigError(
            "feature_extractor.upsampling_interpolation must be 'nearest' or 'bilinear', "
            f"got {options['upsampling_interpolation']!r}"
        )
    return options


def variable_attributes(layer: keras.layers.Layer) -> list[tuple[str, keras.Variable]]:
    """``(attribute, variable)`` pairs of one weighted layer, named as Keras 2 checkpoints name them.

    Keras 2 wrote ``depthwise_kernel`` for depthwise convolutions where Keras 3 calls the variable
    ``kernel``; every other attribute keeps its variable's name.
    """
    if isinstance(layer, keras.layers.BatchNormalization):
        pairs = [("gamma", layer.gamma), ("beta", layer.beta),
                 ("moving_mean", layer.moving_mean), ("moving_variance", layer.moving_variance)]
        return [(name, var) for name, var in pairs if var is not None]
    if isinstance(layer, keras.layers.SeparableConv2D):
        pairs = [("depthwise_kernel", layer.depthwise_kernel), ("pointwise_kernel", layer.pointwise_kernel)]
        if layer.use_bias:
            pairs.append(("bias", layer.bias))
        return pairs
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = [("depthwise_kernel", layer.kernel)]
        if layer.use_bias:
            pairs.append(("bias", layer.bias))
        return pairs
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)):
        pairs = [("kernel", layer.kernel)]
        if layer.use_bias:
            pairs.append(("bias", layer.bias))
        return pairs
    raise TypeError(f"no checkpoint attribute names known for layer {layer.name!r} ({type(layer).__name__})")
