"""MobileNetV2 without classifier, as the object-detection extractors rebuild the Keras application.

The changes the original extractors make to the application:

* BatchNormalization epsilon 1e-3, momentum 0.9997 (plain Keras BatchNorm; SSD swaps in the fused
  kernel with :func:`~zoo.models.layers.with_fused_batch_norm`);
* stride-2 convolutions use ``same`` padding instead of explicit zero padding layers;
* with ``depth_multiplier < 1`` the last 1x1 conv (``Conv_1``) is scaled too (1280 * multiplier,
  rounded to a multiple of 8) where the application keeps 1280.

Used by CenterNet MobileNetV2-FPN and SSD MobileNet V2.
"""
from __future__ import annotations

from typing import Any

import keras

from ..layers import make_divisible

__all__ = ["mobilenet_v2_body"]

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.9997
# (filters, stride, expansion) of the 17 inverted residual blocks.
_BLOCKS = (
    (16, 1, 1),
    (24, 2, 6), (24, 1, 6),
    (32, 2, 6), (32, 1, 6), (32, 1, 6),
    (64, 2, 6), (64, 1, 6), (64, 1, 6), (64, 1, 6),
    (96, 1, 6), (96, 1, 6), (96, 1, 6),
    (160, 2, 6), (160, 1, 6), (160, 1, 6),
    (320, 1, 6),
)


def _bn(name: str) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)


def _relu6(name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(6.0, name=name)


def _inverted_residual(x: Any, in_channels: int, filters: int, stride: int, expansion: int, alpha: float,
                       block_id: int) -> tuple[Any, int]:
    out_channels = make_divisible(int(filters * alpha), 8)
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    if block_id:
        x = keras.layers.Conv2D(expansion * in_channels, 1, padding="same", use_bias=False,
                                name=prefix + "expand")(x)
        x = _bn(prefix + "expand_BN")(x)
        x = _relu6(prefix + "expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False,
                                     name=prefix + "depthwise")(x)
    x = _bn(prefix + "depthwise_BN")(x)
    x = _relu6(prefix + "depthwise_relu")(x)
    x = keras.layers.Conv2D(out_channels, 1, padding="same", use_bias=False, name=prefix + "project")(x)
    x = _bn(prefix + "project_BN")(x)
    if in_channels == out_channels and stride == 1:
        x = keras.layers.Add(name=prefix + "add")([inputs, x])
    return x, out_channels


def mobilenet_v2_body(alpha: float = 1.0, name: str = "mobilenet_v2") -> keras.Model:
    """MobileNetV2 without classifier, layer for layer as the Keras application builds it.

    Returns a model ``[B,H,W,3] -> out_relu`` (stride 32) whose layer names match the application's
    (``block_2_add``, ``out_relu``...). See the module docstring for the detection-specific changes.
    """
    inputs = keras.Input(shape=(None, None, 3), name="input_image")
    channels = make_divisible(32 * alpha, 8)
    x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name="Conv1")(inputs)
    x = _bn("bn_Conv1")(x)
    x = _relu6("Conv1_relu")(x)
    for block_id, (filters, stride, expansion) in enumerate(_BLOCKS):
        x, channels = _inverted_residual(x, channels, filters, stride, expansion, alpha, block_id)
    last = make_divisible(1280 * alpha, 8) if alpha != 1.0 else 1280
    x = keras.layers.Conv2D(last, 1, use_bias=False, name="Conv_1")(x)
    x = _bn("Conv_1_bn")(x)
    x = _relu6("out_relu")(x)
    return keras.Model(inputs, x, name=name)
