"""CenterNet feature extractors ("backbones"), one module per network, and the ``feature_extractor``
options every one of them reads.

Each module registers its factories with
``@register_feature_extractor(type, meta="center_net")`` (:mod:`zoo.models.registry`); the contract a
factory's result satisfies is :class:`zoo.models.centernet.Backbone`.

* :func:`channel_normalize` - the generic extractor preprocessing (optional RGB->BGR swap, then per-channel
  mean / std), as pure TensorFlow ops.
* :func:`feature_extractor_options` - the ``feature_extractor`` fields every CenterNet extractor reads.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from ....errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["channel_normalize", "feature_extractor_options"]


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
