"""SSD feature extractor ``ssd_mobilenet_v1_fpn_keras`` (SSD MobileNet V1 FPN).

Bottom-up: MobileNet V1 as the Keras application lays it out (a 3x3 stride-2 stem conv, then 13
depthwise-separable blocks ``conv_dw_i`` / ``conv_pw_i``), with the original extractor's changes:
'same' padding everywhere (the application's explicit stride-2 padding is dropped), no conv biases,
BatchNorm and activation from the config's ``conv_hyperparams`` when
``override_base_feature_extractor_hyperparams`` is set (else epsilon 1e-3 and ReLU6), filters scaled
by ``depth_multiplier`` and at least ``min_depth``. ``use_depthwise`` (which the original pairs with
a modified MobileNet) is not supported.

``conv_pw_3_relu``, ``conv_pw_5_relu``, ``conv_pw_11_relu`` and ``conv_pw_13_relu`` (levels 2-5) feed
:class:`zoo.models.fpn.FpnFeatureExtractor`. Inputs are scaled from 0..255 to [-1, 1].
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from ....errors import UnsupportedModelError
from ...fpn import FpnFeatureExtractor
from ...layers import ConvHyperparams
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["SsdMobileNetV1Fpn", "create", "mobilenet_v1_body"]

# (pointwise filters, stride) of the 13 depthwise-separable blocks.
_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
_LEVEL_BLOCKS = (3, 5, 11, 13)
_DEFAULT_BASE_HYPERPARAMS = ConvHyperparams(activation="RELU_6", batch_norm=True, bn_epsilon=1e-3, bn_scale=True)


def mobilenet_v1_body(
    hyperparams: ConvHyperparams,
    depth: Callable[[int], int] = int,
    name: str = "classification_backbone",
) -> keras.Model:
    """MobileNet V1 without classifier: images -> ``conv_pw_{3,5,11,13}_relu`` (strides 4, 8, 16, 32).

    ``hyperparams``: BatchNorm and activation of every layer; ``depth``: filter count rule.
    """
    hp = hyperparams

    def bn_act(x: Any, layer_name: str) -> Any:
        return hp.activate(hp.normalize(x, f"{layer_name}_bn"), f"{layer_name}_relu")

    inputs = keras.Input((None, None, 3), name="input_image")
    x = keras.layers.Conv2D(depth(32), 3, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    x = bn_act(x, "conv1")
    outputs = []
    for block, (filters, stride) in enumerate(_BLOCKS, start=1):
        x = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"conv_dw_{block}")(x)
        x = bn_act(x, f"conv_dw_{block}")
        x = keras.layers.Conv2D(depth(filters), 1, padding="same", use_bias=False, name=f"conv_pw_{block}")(x)
        x = bn_act(x, f"conv_pw_{block}")
        if block in _LEVEL_BLOCKS:
            outputs.append(x)
    return keras.Model(inputs, outputs, name=name)


class SsdMobileNetV1Fpn(FpnFeatureExtractor):
    """``ssd_mobilenet_v1_fpn_keras`` (the contract: :class:`~zoo.models.ssd.SsdFeatureExtractor`)."""

    name = "ssd_mobilenet_v1_fpn_keras"
    min_image_dim = 33

    def __init__(self, config: Message, hyperparams: ConvHyperparams) -> None:
        if bool(config.get("use_depthwise", False)):
            raise UnsupportedModelError(f"{self.name} with use_depthwise has no Keras implementation")
        super().__init__(config, hyperparams)

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Pixel values 0..255 -> [-1, 1]."""
        return (2.0 / 255.0) * tf.cast(images, tf.float32) - 1.0

    def backbone(self) -> keras.Model:
        """The MobileNet V1 body, outputs of levels 2..5."""
        hp = self.hyperparams if self.override_base_hyperparams else _DEFAULT_BASE_HYPERPARAMS
        alpha = self.depth_multiplier

        def depth(filters: int) -> int:  # the application's alpha, then the minimum depth
            return max(int(filters * alpha), self.min_depth)

        return mobilenet_v1_body(hp, depth, name=self.backbone_name)


@register_feature_extractor("ssd_mobilenet_v1_fpn_keras", meta="ssd")
def create(config: Message, hyperparams: ConvHyperparams) -> SsdMobileNetV1Fpn:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return SsdMobileNetV1Fpn(config, hyperparams)
