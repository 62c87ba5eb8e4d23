"""Faster R-CNN ResNet V1 feature extractors (``faster_rcnn_resnet{50,101,152}_keras``) in Keras 3.

The original wraps ``keras.applications`` ResNet50/101/152 with object-detection overrides; the
network is :mod:`zoo.models.nets.resnet_v1` with BatchNorm ``epsilon=1e-5`` (scale and centre, fused
at inference as Keras 2 ran it) and ReLU.

The first-stage (proposal) extractor is the stem and stages conv2-conv4 (stride 16, 1024 channels);
the second-stage (box classifier) extractor is stage conv5 applied to the cropped proposal features
(2048 channels, stride 2 again).

Checkpoint layout: ``_feature_extractor_for_proposal_features/layer_with_weights-N`` and
``_feature_extractor_for_box_classifier_features/layer_with_weights-N`` (relative to ``model/``),
``N`` numbering weighted layers in the order Keras 2 listed them
(:func:`~zoo.models.nets.resnet_v1.block_layer_order`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ...checkpoint_layout import numbered_items
from ...layers import ConvHyperparams
from ...nets.resnet_v1 import RESNET_V1_BLOCKS, block_layer_order, resnet_v1_stage, resnet_v1_stem
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["CHANNEL_MEANS", "FasterRcnnResnetV1", "create"]

CHANNEL_MEANS = (123.68, 116.779, 103.939)
"""VGG-style RGB means subtracted by the extractor's ``preprocess``."""

_HYPERPARAMS = ConvHyperparams(activation="RELU", batch_norm=True, bn_epsilon=1e-5, bn_scale=True, bn_momentum=0.997)
_PROPOSAL_SCOPE = "_feature_extractor_for_proposal_features"
_CLASSIFIER_SCOPE = "_feature_extractor_for_box_classifier_features"
_TYPES = {f"faster_rcnn_resnet{d}_keras": d for d in RESNET_V1_BLOCKS}


class FasterRcnnResnetV1:
    """The ResNet V1 extractor pair of a Faster R-CNN model (the contract:
    :class:`~zoo.models.faster_rcnn.FasterRcnnFeatureExtractor`)."""

    first_stage_features_stride = 16
    proposal_channels = 1024

    def __init__(self, depth: int = 50, *, batch_norm_trainable: bool = False) -> None:
        if depth not in RESNET_V1_BLOCKS:
            raise ValueError(f"ResNet V1 depth must be one of {sorted(RESNET_V1_BLOCKS)}, got {depth}")
        self.depth = depth
        self.name = f"faster_rcnn_resnet{depth}_keras"
        self.batch_norm_trainable = bool(batch_norm_trainable)
        self.blocks = RESNET_V1_BLOCKS[depth]

    def preprocess(self, resized_images: tf.Tensor) -> tf.Tensor:
        """Resized RGB images (0..255, padding included) minus the channel means (3-channel input only)."""
        images = tf.cast(resized_images, tf.float32)
        if images.shape[-1] != 3:
            return images
        return images - tf.constant([[list(CHANNEL_MEANS)]], tf.float32)

    def build_proposal_model(self) -> keras.Model:
        """Preprocessed ``[B, H, W, 3]`` -> conv4 output ``[B, ceil(H/16), ceil(W/16), 1024]``."""
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        x = resnet_v1_stem(inputs, _HYPERPARAMS)
        for stage, blocks in enumerate(self.blocks[:3], start=2):
            x = resnet_v1_stage(x, stage, blocks, _HYPERPARAMS)
        return keras.Model(inputs, x, name=f"resnet{self.depth}_v1_proposal_features")

    def build_box_classifier_model(self, crop_size: int | None = None) -> keras.Model:
        """Proposal crops ``[K, h, w, 1024]`` -> conv5 output ``[K, ceil(h/2), ceil(w/2), 2048]``."""
        inputs = keras.Input((crop_size, crop_size, self.proposal_channels), name="proposal_feature_maps")
        x = resnet_v1_stage(inputs, 5, self.blocks[3], _HYPERPARAMS)
        return keras.Model(inputs, x, name=f"resnet{self.depth}_v1_box_classifier_features")

    def checkpoint_map(self, proposal_model: keras.Model, classifier_model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/`` (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variables."""
        proposal = ["conv1_conv", "conv1_bn"]
        for stage, blocks in enumerate(self.blocks[:3], start=2):
            proposal += block_layer_order(stage, blocks)
        out = numbered_items(_PROPOSAL_SCOPE, [proposal_model.get_layer(n) for n in proposal])
        classifier = block_layer_order(5, self.blocks[3])
        out.update(numbered_items(_CLASSIFIER_SCOPE, [classifier_model.get_layer(n) for n in classifier]))
        return out


@register_feature_extractor(*_TYPES, meta="faster_rcnn")
def create(config: Message | None = None) -> FasterRcnnResnetV1:
    """``faster_rcnn_resnet{50,101,152}_keras`` from its ``feature_extractor`` message."""
    depth = _TYPES[str(config.get("type", ""))] if config is not None else 50
    trainable = bool(config.get("batch_norm_trainable", False)) if config is not None else False
    return FasterRcnnResnetV1(depth, batch_norm_trainable=trainable)
