"""MobileNetV2 + FPN CenterNet backbone in Keras 3 (``mobilenet_v2_fpn`` and ``..._sep_conv``).

Base network: MobileNetV2 (no top) as the Keras application lays it out, with the object-detection
variations of the original extractor:

* BatchNormalization epsilon 1e-3, momentum 0.9997; at inference it uses the moving statistics (the
  original's ``batchnorm_training=True`` only leaves the training flag unfrozen; the reference outputs
  of the zoo checkpoints confirm moving statistics, batch statistics give a different result);
* stride-2 convolutions use ``same`` padding instead of explicit zero padding layers;
* with ``depth_multiplier < 1`` the last 1x1 conv (``Conv_1``) is scaled too (1280 * multiplier,
  rounded to a multiple of 8) where the application keeps 1280.

Top-down pathway: a 1x1 conv (64) on the stride-32 output, then three times: upsample x2
(``upsampling_interpolation``, default nearest), add a 1x1 conv (64 / 32 / 24 filters) of the
matching bottom-up output (``block_9_add``, ``block_5_add``, ``block_2_add``), then a 3x3 conv
(separable when ``use_separable_conv``; 32 / 24 / 24 filters) + BatchNorm + ReLU. The result is one
stride-4 map of 24 channels.

Checkpoint layout (keys relative to ``model/_feature_extractor/``): ``_base_model/layer_with_weights-N``
for the N-th weighted layer of the MobileNetV2 body, ``_feature_extractor_model/layer_with_weights-M``
(M >= 1) for the pathway's layers, entry 0 being the nested base network.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from ..layers import channel_normalize, feature_extractor_options, make_divisible
from . import BackboneFactory, nested_base_checkpoint_map, register_backbone

if TYPE_CHECKING:  # pragma: no cover
    from ...pipeline_config import Message

__all__ = ["MobileNetV2FPNBackbone", "mobilenet_v2_body"]

_BASE_NAME = "base_model"
_SKIP_LAYERS = ("block_2_add", "block_5_add", "block_9_add", "out_relu")
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


class MobileNetV2FPNBackbone:
    """CenterNet MobileNetV2-FPN feature extractor."""

    stride = 4
    num_feature_outputs = 1

    def __init__(self, channel_means: Sequence[float] = (0.0, 0.0, 0.0),
                 channel_stds: Sequence[float] = (1.0, 1.0, 1.0), bgr_ordering: bool = False,
                 depth_multiplier: float = 1.0, use_separable_conv: bool = False,
                 upsampling_interpolation: str = "nearest", name: str = "mobilenet_v2_fpn") -> None:
        if depth_multiplier <= 0:
            raise ValueError(f"depth_multiplier must be positive, got {depth_multiplier}")
        if upsampling_interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"upsampling_interpolation must be 'nearest' or 'bilinear', got {upsampling_interpolation!r}")
        self.channel_means = tuple(float(v) for v in channel_means)
        self.channel_stds = tuple(float(v) for v in channel_stds)
        self.bgr_ordering = bool(bgr_ordering)
        self.depth_multiplier = float(depth_multiplier)
        self.use_separable_conv = bool(use_separable_conv)
        self.upsampling_interpolation = upsampling_interpolation
        self.name = name

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Config normalization, then the MobileNetV2 scaling of 0..255 to -1..1."""
        x = channel_normalize(images, self.channel_means, self.channel_stds, self.bgr_ordering)
        return x / 127.5 - 1.0

    def build(self) -> keras.Model:
        """Nested MobileNetV2 body (its FPN taps as outputs) + the top-down pathway."""
        body = mobilenet_v2_body(self.depth_multiplier)
        base = keras.Model(body.input, [body.get_layer(n).output for n in _SKIP_LAYERS], name=_BASE_NAME)
        inputs = keras.Input(shape=(None, None, 3), name="preprocessed_inputs")
        taps = base(inputs)
        top_down = keras.layers.Conv2D(64, 1, padding="same", name="fpn_top_conv")(taps[-1])
        filters_list = (64, 32, 24)
        for i, filters in enumerate(filters_list):
            level = len(filters_list) - 1 - i
            top_down = keras.layers.UpSampling2D(2, interpolation=self.upsampling_interpolation,
                                                 name=f"fpn_upsample{i}")(top_down)
            residual = keras.layers.Conv2D(filters, 1, padding="same", name=f"fpn_lateral{i}")(taps[level])
            top_down = keras.layers.Add(name=f"fpn_merge{i}")([top_down, residual])
            next_filters = filters_list[i + 1] if i + 1 < len(filters_list) else 24
            conv_cls = keras.layers.SeparableConv2D if self.use_separable_conv else keras.layers.Conv2D
            top_down = conv_cls(next_filters, 3, padding="same", name=f"fpn_conv{i}")(top_down)
            top_down = keras.layers.BatchNormalization(name=f"fpn_conv{i}_bn")(top_down)
            top_down = keras.layers.ReLU(name=f"fpn_conv{i}_relu")(top_down)
        return keras.Model(inputs, [top_down], name=self.name)

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys (``_base_model/...``, ``_feature_extractor_model/...``) -> variables."""
        return nested_base_checkpoint_map(model, _BASE_NAME)


def _factory(always_separable: bool, type_name: str) -> BackboneFactory:
    def factory(config: Message) -> MobileNetV2FPNBackbone:
        opts = feature_extractor_options(config)
        separable = always_separable or opts["use_separable_conv"] or opts["use_depthwise"]
        return MobileNetV2FPNBackbone(
            opts["channel_means"], opts["channel_stds"], opts["bgr_ordering"],
            depth_multiplier=opts["depth_multiplier"], use_separable_conv=separable,
            upsampling_interpolation=opts["upsampling_interpolation"], name=type_name,
        )
    return factory


register_backbone("mobilenet_v2_fpn", _factory(False, "mobilenet_v2_fpn"))
register_backbone("mobilenet_v2_fpn_sep_conv", _factory(True, "mobilenet_v2_fpn_sep_conv"))
