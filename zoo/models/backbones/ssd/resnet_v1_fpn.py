"""SSD feature extractors ``ssd_resnet{50,101,152}_v1_fpn_keras`` (RetinaNet: SSD ResNet V1 FPN).

Bottom-up: :mod:`zoo.models.nets.resnet_v1` with the changes the original extractor makes to it:

* BatchNorm and activation from the config's ``conv_hyperparams`` when
  ``override_base_feature_extractor_hyperparams`` is set (the zoo's: epsilon 1e-3 and ReLU6
  *everywhere*, block outputs included), else BatchNorm epsilon 1e-5 and ReLU;
* filters scale with ``depth_multiplier`` and never drop below ``min_depth``.

The outputs of stages conv3-conv5 (levels 3-5) feed :class:`zoo.models.fpn.FpnFeatureExtractor`.
Inputs are RGB minus the ImageNet channel means (no scaling).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ....errors import ConfigError
from ...fpn import FpnFeatureExtractor
from ...layers import ConvHyperparams
from ...nets.resnet_v1 import RESNET_V1_BLOCKS, resnet_v1_body
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["SsdResNetV1Fpn", "create"]

# feature_extractor.type -> bottleneck blocks per stage (conv2..conv5).
RESNET_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    f"ssd_resnet{depth}_v1_fpn_keras": blocks for depth, blocks in RESNET_V1_BLOCKS.items()
}
_CHANNEL_MEANS = (123.68, 116.779, 103.939)
# The base network's own layers when the config does not override them.
_DEFAULT_BASE_HYPERPARAMS = ConvHyperparams(activation="RELU", batch_norm=True, bn_epsilon=1e-5, bn_scale=True)


class SsdResNetV1Fpn(FpnFeatureExtractor):
    """``ssd_resnet{50,101,152}_v1_fpn_keras`` (the contract: :class:`~zoo.models.ssd.SsdFeatureExtractor`)."""

    min_image_dim = 129
    supports_depthwise = False  # the original ignores use_depthwise for ResNet

    def __init__(self, config: Message, hyperparams: ConvHyperparams) -> None:
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


@register_feature_extractor(*RESNET_BLOCKS, meta="ssd")
def create(config: Message, hyperparams: ConvHyperparams) -> SsdResNetV1Fpn:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return SsdResNetV1Fpn(config, hyperparams)
