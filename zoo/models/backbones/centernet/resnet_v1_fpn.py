"""CenterNet ResNet v1 + FPN feature extractors: ``resnet_v1_50_fpn`` and ``resnet_v1_101_fpn``.

The bottom-up pathway is ``keras.applications`` ResNet50 / ResNet101 (as in the original); a top-down
pathway merges it at strides 32 -> 16 -> 8 -> 4 and ends in one 64-channel stride-4 feature map.
Checkpoint layout: ``_base_model/layer_with_weights-N`` numbers the weighted layers of the ResNet,
``_feature_extractor_model/layer_with_weights-N`` those of the whole extractor (N=0 being the ResNet
itself, whose variables are stored once, under ``_base_model``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ...checkpoint_layout import layer_items, layers_with_weights, numbered_items
from ...registry import register_feature_extractor
from . import channel_normalize, feature_extractor_options

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["ResNetV1FPN", "create"]

_RESNETS = {
    "resnet_v1_50_fpn": ("ResNet50", ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")),
    "resnet_v1_101_fpn": ("ResNet101", ("conv2_block3_out", "conv3_block4_out", "conv4_block23_out", "conv5_block3_out")),
}
# Caffe-style normalization of keras.applications.resnet: BGR order, ImageNet means subtracted.
_CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)
_FPN_FILTERS = (256, 128, 64)


class ResNetV1FPN:
    """Backbone for ``resnet_v1_{50,101}_fpn`` (the contract: :class:`zoo.models.centernet.Backbone`)."""

    stride = 4

    def __init__(self, kind: str, channel_means: Sequence[float] = (0.0, 0.0, 0.0),
                 channel_stds: Sequence[float] = (1.0, 1.0, 1.0), bgr_ordering: bool = False) -> None:
        if kind not in _RESNETS:
            raise ValueError(f"unknown ResNet FPN variant {kind!r}")
        self.name = kind
        self._app, self._outputs = _RESNETS[kind]
        self.channel_means = tuple(float(v) for v in channel_means)
        self.channel_stds = tuple(float(v) for v in channel_stds)
        self.bgr_ordering = bool(bgr_ordering)

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Config normalization (means/stds, optional BGR), then the ResNet's caffe normalization."""
        x = channel_normalize(images, self.channel_means, self.channel_stds, self.bgr_ordering)
        return x[..., ::-1] - tf.constant(_CAFFE_BGR_MEANS, tf.float32)

    def build(self) -> keras.Model:
        """Preprocessed images -> ``[stride-4 features (64 channels)]``."""
        base = getattr(keras.applications, self._app)(include_top=False, weights=None, input_shape=(None, None, 3))
        resnet = keras.Model(base.input, [base.get_layer(n).output for n in self._outputs], name=f"{self.name}_resnet")
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        levels = resnet(inputs)
        top_down = keras.layers.Conv2D(256, 1, padding="same", name="fpn_top")(levels[-1])
        for i, filters in enumerate(_FPN_FILTERS):
            top_down = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_up_{i}")(top_down)
            residual = keras.layers.Conv2D(filters, 1, padding="same", name=f"fpn_lateral_{i}")(levels[2 - i])
            top_down = keras.layers.Add(name=f"fpn_merge_{i}")([top_down, residual])
            next_filters = _FPN_FILTERS[i + 1] if i + 1 < len(_FPN_FILTERS) else 64
            top_down = keras.layers.Conv2D(next_filters, 3, padding="same", name=f"fpn_conv_{i}")(top_down)
            top_down = keras.layers.BatchNormalization(name=f"fpn_bn_{i}")(top_down)
            top_down = keras.layers.ReLU(name=f"fpn_relu_{i}")(top_down)
        return keras.Model(inputs, [top_down], name=self.name)

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """``_base_model/...`` for the ResNet, ``_feature_extractor_model/...`` for the FPN layers."""
        out = numbered_items("_base_model", layers_with_weights(model.get_layer(f"{self.name}_resnet")))
        fpn = ["fpn_top"]
        for i in range(len(_FPN_FILTERS)):
            fpn += [f"fpn_lateral_{i}", f"fpn_conv_{i}", f"fpn_bn_{i}"]
        for n, name in enumerate(fpn, start=1):
            out.update(layer_items(f"_feature_extractor_model/layer_with_weights-{n}", model.get_layer(name)))
        return out


@register_feature_extractor(*_RESNETS, meta="center_net")
def create(config: Message) -> ResNetV1FPN:
    """``resnet_v1_{50,101}_fpn`` from its ``feature_extractor`` message."""
    opts = feature_extractor_options(config)
    return ResNetV1FPN(opts["type"], opts["channel_means"], opts["channel_stds"], opts["bgr_ordering"])
