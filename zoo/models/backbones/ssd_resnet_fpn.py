"""SSD feature extractors ``ssd_resnet{50,101,152}_v1_fpn_keras`` (RetinaNet: SSD ResNet V1 FPN).

Bottom-up: ResNet V1 as the Keras application lays it out (bottleneck blocks with the stride on the
first 1x1 convolution, a 1x1 projection shortcut in each stage's first block), with the changes the
original extractor makes to it:

* no conv biases; BatchNorm and activation from the config's ``conv_hyperparams`` when
  ``override_base_feature_extractor_hyperparams`` is set (the zoo's: epsilon 1e-3 and ReLU6
  *everywhere*, block outputs included), else BatchNorm epsilon 1e-5 and ReLU;
* the 7x7 stride-2 stem conv pads the input by 3 on every side, then runs 'valid' (not TF 'same',
  which pads 2/3 on an even input); the 3x3 stride-2 max pool uses TF 'same' padding;
* filters scale with ``depth_multiplier`` and never drop below ``min_depth``.

The outputs of stages conv3-conv5 (levels 3-5) feed :class:`zoo.models.ssd.FpnFeatureExtractor`.
Inputs are RGB minus the ImageNet channel means (no scaling).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from ...errors import ConfigError
from ..ssd import ConvHyperparams, FpnFeatureExtractor

__all__ = ["SsdResNetV1Fpn", "create", "resnet_v1_body"]

# feature_extractor.type -> bottleneck blocks per stage (conv2..conv5).
RESNET_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "ssd_resnet50_v1_fpn_keras": (3, 4, 6, 3),
    "ssd_resnet101_v1_fpn_keras": (3, 4, 23, 3),
    "ssd_resnet152_v1_fpn_keras": (3, 8, 36, 3),
}
_STAGE_FILTERS = (64, 128, 256, 512)
_CHANNEL_MEANS = (123.68, 116.779, 103.939)
# The base network's own layers when the config does not override them.
_DEFAULT_BASE_HYPERPARAMS = ConvHyperparams(activation="RELU", batch_norm=True, bn_epsilon=1e-5, bn_scale=True)


def resnet_v1_body(
    blocks: tuple[int, ...],
    hyperparams: ConvHyperparams,
    depth: Callable[[int], int] = int,
    name: str = "classification_backbone",
) -> keras.Model:
    """ResNet V1 without classifier: images -> outputs of stages conv2..conv5 (strides 4, 8, 16, 32).

    ``blocks``: bottleneck blocks per stage; ``hyperparams``: BatchNorm and activation of every layer;
    ``depth``: filter count rule (the original's ``max(int(d * depth_multiplier), min_depth)``).
    Layer names follow the Keras application (``conv2_block1_1_conv``, ``conv5_block3_out``...).
    """
    hp = hyperparams

    def bn(x: Any, layer_name: str) -> Any:
        return hp.batch_norm_layer(layer_name)(x) if hp.batch_norm else x

    def act(x: Any, layer_name: str) -> Any:
        layer = hp.activation_layer(layer_name)
        return layer(x) if layer is not None else x

    def conv(x: Any, filters: int, kernel: int, layer_name: str, stride: int = 1, padding: str = "same") -> Any:
        return keras.layers.Conv2D(
            depth(filters), kernel, strides=stride, padding=padding, use_bias=False, name=layer_name
        )(x)

    inputs = keras.Input((None, None, 3), name="input_image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = act(bn(conv(x, 64, 7, "conv1_conv", stride=2, padding="valid"), "conv1_bn"), "conv1_relu")
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    outputs = []
    for stage, (filters, count) in enumerate(zip(_STAGE_FILTERS, blocks)):
        for b in range(count):
            prefix = f"conv{stage + 2}_block{b + 1}_"
            stride = 2 if b == 0 and stage > 0 else 1
            if b == 0:
                shortcut = bn(conv(x, 4 * filters, 1, prefix + "0_conv", stride=stride), prefix + "0_bn")
            else:
                shortcut = x
            y = act(bn(conv(x, filters, 1, prefix + "1_conv", stride=stride), prefix + "1_bn"), prefix + "1_relu")
            y = act(bn(conv(y, filters, 3, prefix + "2_conv"), prefix + "2_bn"), prefix + "2_relu")
            y = bn(conv(y, 4 * filters, 1, prefix + "3_conv"), prefix + "3_bn")
            x = act(keras.layers.Add(name=prefix + "add")([shortcut, y]), prefix + "out")
        outputs.append(x)
    return keras.Model(inputs, outputs, name=name)


class SsdResNetV1Fpn(FpnFeatureExtractor):
    """``ssd_resnet{50,101,152}_v1_fpn_keras`` (see :mod:`zoo.models.ssd` for the feature-extractor contract)."""

    min_image_dim = 129
    supports_depthwise = False  # the original ignores use_depthwise for ResNet

    def __init__(self, config: Any, hyperparams: ConvHyperparams) -> None:
        kind = str(config.get("type", ""))
        if kind not in RESNET_BLOCKS:
            raise ConfigError(f"not an SSD ResNet V1 FPN feature extractor type: {kind!r} ({', '.join(RESNET_BLOCKS)})")
        self.name = kind
        super().__init__(config, hyperparams)
        self.blocks = RESNET_BLOCKS[kind]

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """RGB 0..255 minus the ImageNet channel means."""
        return tf.cast(images, tf.float32) - tf.constant(_CHANNEL_MEANS, tf.float32)

    def backbone(self) -> keras.Model:
        """The ResNet body, outputs of conv2..conv5 (levels 2..5)."""
        hp = self.hyperparams if self.override_base_hyperparams else _DEFAULT_BASE_HYPERPARAMS
        return resnet_v1_body(self.blocks, hp, self.depth_of, name=self.backbone_name)


def create(config: Any, hyperparams: ConvHyperparams) -> SsdResNetV1Fpn:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return SsdResNetV1Fpn(config, hyperparams)
