"""ResNet V2 (50 / 101) CenterNet backbone in Keras 3.

``keras.applications.ResNet50V2`` / ``ResNet101V2`` (no top) is the base network, taken at
``conv5_block3_out`` (stride 32, before the final ``post_bn``), followed by three upsampling stages
of 3x3 conv + BN + ReLU and 3x3 stride-2 transposed conv + BN + ReLU (256, 128, 64 filters), giving
one stride-4 map of 64 channels.

Checkpoint layout (keys relative to ``model/_feature_extractor/``):
``_base_model/layer_with_weights-N/...`` for the N-th weighted layer of the application model
(its unused ``post_bn`` included) and ``_feature_extractor_model/layer_with_weights-M/...`` for the
upsampling layers (M >= 1; entry 0 is the nested base network).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ...checkpoint_layout import nested_base_checkpoint_map
from ...registry import register_feature_extractor
from . import channel_normalize, feature_extractor_options

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["ResNetV2Backbone", "create"]

_APPLICATIONS = {
    "resnet_v2_50": keras.applications.ResNet50V2,
    "resnet_v2_101": keras.applications.ResNet101V2,
}
_BASE_NAME = "base_model"
_UPSAMPLE_FILTERS = (256, 128, 64)


class ResNetV2Backbone:
    """CenterNet ResNet V2 feature extractor (``resnet_v2_50`` or ``resnet_v2_101``)."""

    stride = 4
    num_feature_outputs = 1

    def __init__(self, resnet_type: str = "resnet_v2_50", channel_means: Sequence[float] = (0.0, 0.0, 0.0),
                 channel_stds: Sequence[float] = (1.0, 1.0, 1.0), bgr_ordering: bool = False) -> None:
        if resnet_type not in _APPLICATIONS:
            raise ValueError(f"unknown ResNet V2 type {resnet_type!r}; expected one of {sorted(_APPLICATIONS)}")
        self.name = resnet_type
        self.channel_means = tuple(float(v) for v in channel_means)
        self.channel_stds = tuple(float(v) for v in channel_stds)
        self.bgr_ordering = bool(bgr_ordering)

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Config normalization, then the ResNet V2 scaling of 0..255 to -1..1."""
        x = channel_normalize(images, self.channel_means, self.channel_stds, self.bgr_ordering)
        return x / 127.5 - 1.0

    def build(self) -> keras.Model:
        """Base ResNet V2 (nested, both of its outputs kept) + the three upsampling stages."""
        app = _APPLICATIONS[self.name](weights=None, include_top=False, input_shape=(None, None, 3))
        # Keep the full application (post_bn included) so that every checkpointed variable is ours.
        base = keras.Model(app.input, [app.get_layer("conv5_block3_out").output, app.output], name=_BASE_NAME)
        inputs = keras.Input(shape=(None, None, 3), name="preprocessed_inputs")
        x, _ = base(inputs)
        for i, filters in enumerate(_UPSAMPLE_FILTERS):
            x = keras.layers.Conv2D(filters, 3, strides=1, padding="same", name=f"upsample{i}_conv")(x)
            x = keras.layers.BatchNormalization(name=f"upsample{i}_conv_bn")(x)
            x = keras.layers.ReLU(name=f"upsample{i}_conv_relu")(x)
            x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                             name=f"upsample{i}_transpose")(x)
            x = keras.layers.BatchNormalization(name=f"upsample{i}_transpose_bn")(x)
            x = keras.layers.ReLU(name=f"upsample{i}_transpose_relu")(x)
        return keras.Model(inputs, [x], name=self.name)

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys (``_base_model/...``, ``_feature_extractor_model/...``) -> variables."""
        return nested_base_checkpoint_map(model, _BASE_NAME)


@register_feature_extractor(*_APPLICATIONS, meta="center_net")
def create(config: Message) -> ResNetV2Backbone:
    """``resnet_v2_{50,101}`` from its ``feature_extractor`` message."""
    opts = feature_extractor_options(config)
    return ResNetV2Backbone(opts["type"], opts["channel_means"], opts["channel_stds"], opts["bgr_ordering"])
