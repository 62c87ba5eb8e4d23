"""SSD feature extractor ``ssd_mobilenet_v2_fpn_keras`` (SSD MobileNet V2 FPN and FPN-lite).

Bottom-up: ``keras.applications.MobileNetV2`` (as in the original, whose layer overrides only swap in
its own BatchNorm/activation/padding choices; Keras' explicit stride-2 padding equals TF 'SAME' padding
here, so the computation is identical). Its ``block_2_add``, ``block_5_add`` (stride 8),
``block_12_add`` (stride 16) and ``out_relu`` (stride 32) are levels 2-5 of the shared
:class:`~zoo.models.fpn.FpnFeatureExtractor` (FPN-lite: separable 3x3 blocks with ``use_depthwise``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ....errors import ConfigError
from ...fpn import FpnFeatureExtractor
from ...layers import ConvHyperparams
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["SsdMobileNetV2Fpn", "create"]

# MobileNetV2 layers ending the blocks the original calls layer_4, layer_7, layer_14 and layer_19.
_LEVEL_OUTPUTS = ("block_2_add", "block_5_add", "block_12_add", "out_relu")


class SsdMobileNetV2Fpn(FpnFeatureExtractor):
    """``ssd_mobilenet_v2_fpn_keras`` (the contract: :class:`~zoo.models.ssd.SsdFeatureExtractor`)."""

    name = "ssd_mobilenet_v2_fpn_keras"
    min_image_dim = 33

    def __init__(self, config: Message, hyperparams: ConvHyperparams) -> None:
        super().__init__(config, hyperparams)
        # The original raises every backbone convolution to ``min_depth`` filters; Keras' MobileNetV2
        # never has fewer than 8, so only a larger min_depth would change a thinned backbone.
        if self.depth_multiplier != 1.0 and self.min_depth > 8:
            raise ConfigError(
                f"{self.name}: depth_multiplier {self.depth_multiplier} with min_depth {self.min_depth} is not "
                "supported (use min_depth <= 8, or depth_multiplier 1.0 as in the zoo)"
            )

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Pixel values 0..255 -> [-1, 1]."""
        return (2.0 / 255.0) * tf.cast(images, tf.float32) - 1.0

    def backbone(self) -> keras.Model:
        """The MobileNetV2 application, outputs of levels 2..5."""
        base = keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(None, None, 3), alpha=self.depth_multiplier
        )
        return keras.Model(base.input, [base.get_layer(n).output for n in _LEVEL_OUTPUTS], name=self.backbone_name)


@register_feature_extractor("ssd_mobilenet_v2_fpn_keras", meta="ssd")
def create(config: Message, hyperparams: ConvHyperparams) -> SsdMobileNetV2Fpn:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return SsdMobileNetV2Fpn(config, hyperparams)
