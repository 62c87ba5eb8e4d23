"""MobileNetV2 + FPN CenterNet backbone in Keras 3 (``mobilenet_v2_fpn`` and ``..._sep_conv``).

Base network: :func:`zoo.models.nets.mobilenet_v2.mobilenet_v2_body`. At inference its BatchNorm uses
the moving statistics (the original's ``batchnorm_training=True`` only leaves the training flag
unfrozen; the reference outputs of the zoo checkpoints confirm moving statistics, batch statistics
give a different result).

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
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ...checkpoint_layout import nested_base_checkpoint_map
from ...nets.mobilenet_v2 import mobilenet_v2_body
from ...registry import register_feature_extractor
from . import channel_normalize, feature_extractor_options

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["MobileNetV2FPNBackbone", "create"]

_BASE_NAME = "base_model"
_SKIP_LAYERS = ("block_2_add", "block_5_add", "block_9_add", "out_relu")


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


@register_feature_extractor("mobilenet_v2_fpn", "mobilenet_v2_fpn_sep_conv", meta="center_net")
def create(config: Message) -> MobileNetV2FPNBackbone:
    """``mobilenet_v2_fpn`` (``..._sep_conv``: separable convolutions always) from its ``feature_extractor`` message."""
    opts = feature_extractor_options(config)
    separable = opts["type"] == "mobilenet_v2_fpn_sep_conv" or opts["use_separable_conv"] or opts["use_depthwise"]
    return MobileNetV2FPNBackbone(
        opts["channel_means"], opts["channel_stds"], opts["bgr_ordering"],
        depth_multiplier=opts["depth_multiplier"], use_separable_conv=separable,
        upsampling_interpolation=opts["upsampling_interpolation"], name=opts["type"],
    )
