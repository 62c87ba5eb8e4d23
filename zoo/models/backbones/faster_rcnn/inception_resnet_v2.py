"""Faster R-CNN Inception-ResNet-V2 feature extractor (``faster_rcnn_inception_resnet_v2_keras``) in Keras 3.

The original wraps ``keras.applications`` InceptionResNetV2 with object-detection overrides
(output stride 16, feature-map alignment); this module rebuilds that network layer for layer:

* every convolution and max-pool uses ``same`` padding (the original's ``align_feature_maps``), so
  a 640x640 input gives a 40x40 stride-16 map and a 17x17 crop gives 9x9 classifier features;
* ``conv -> BatchNorm -> ReLU`` units whose convolution has no bias and whose BatchNorm has no
  ``gamma`` (``scale=False``, ``epsilon=1e-3``), run with the fused inference kernel as Keras 2 did;
* residual Inception blocks: the branches are concatenated, projected back by a 1x1 convolution
  with bias (no BatchNorm), scaled and added to the block input, then ReLU (block35: scale 0.17,
  block17: 0.1, block8: 0.2; the last block8 has scale 1 and no activation).

The first-stage (proposal) extractor runs from the image to ``block17_20_ac`` (1088 channels); the
second-stage (box classifier) extractor runs ``mixed_7a``, ten ``block8`` blocks and ``conv_7b``
(1536 channels) on the cropped proposal features. ``preprocess`` maps pixels 0..255 to [-1, 1].

Checkpoint layout: ``_feature_extractor_for_proposal_features/layer_with_weights-N`` and
``_feature_extractor_for_box_classifier_features/layer_with_weights-N`` (relative to ``model/``).
``N`` numbers the weighted layers in the order a Keras 2 functional model lists its layers:
by decreasing distance from the output, ties broken by the order a depth-first walk from the
output first reaches them (:func:`keras2_layer_order` computes it from the graph built here).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from ...checkpoint_layout import numbered_items
from ...layers import FusedBatchNormalization
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = [
    "FasterRcnnInceptionResnetV2",
    "ScaledResidual",
    "create",
    "keras2_layer_order",
]

_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.9997
_PROPOSAL_SCOPE = "_feature_extractor_for_proposal_features"
_CLASSIFIER_SCOPE = "_feature_extractor_for_box_classifier_features"


@keras.saving.register_keras_serializable(package="odzoo")
class ScaledResidual(keras.layers.Layer):
    """``inputs[0] + inputs[1] * scale``: the residual update of an Inception-ResNet block."""

    def __init__(self, scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs: Sequence[Any]) -> Any:
        return inputs[0] + inputs[1] * self.scale

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


def keras2_layer_order(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a functional ``model`` (called once each) in the order Keras 2 listed them.

    Keras 2 walks the graph depth-first from the outputs (inputs of a call in argument order),
    numbering layers as it first meets them; a layer's depth is its longest path to an output.
    Layers are listed by decreasing depth, ties by that numbering.
    """
    first_seen: dict[int, int] = {}
    layers: dict[int, Any] = {}
    finished: list[Any] = []
    done: set[int] = set()

    def visit(tensor: Any) -> None:
        op, node_index, _ = tensor._keras_history
        node = op._inbound_nodes[node_index]
        if id(node) in done:
            return
        first_seen.setdefault(id(op), len(first_seen))
        layers[id(op)] = op
        if not node.is_input:
            for parent in node.input_tensors:
                visit(parent)
        done.add(id(node))
        finished.append(node)

    for output in tf.nest.flatten(model.outputs):
        visit(output)
    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for node in reversed(finished):
        op = node.operation
        depth = max(node_depth.get(id(node), 0), layer_depth.get(id(op), 0))
        layer_depth[id(op)] = depth
        node_depth[id(node)] = depth
        if not node.is_input:
            for parent in node.input_tensors:
                p_op, p_index, _ = parent._keras_history
                p_node = p_op._inbound_nodes[p_index]
                node_depth[id(p_node)] = max(depth + 1, node_depth.get(id(p_node), 0))
    ordered = sorted(layer_depth, key=lambda k: (-layer_depth[k], first_seen[k]))
    return [layers[k] for k in ordered if not isinstance(layers[k], keras.layers.InputLayer)]


class FasterRcnnInceptionResnetV2:
    """The Inception-ResNet-V2 extractor pair of a Faster R-CNN model (interface of
    :class:`~zoo.models.faster_rcnn.FasterRcnnFeatureExtractor`)."""

    first_stage_features_stride = 16
    proposal_channels = 1088
    name = "faster_rcnn_inception_resnet_v2_keras"

    def __init__(self, *, batch_norm_trainable: bool = False) -> None:
        self.batch_norm_trainable = bool(batch_norm_trainable)
        self._count = 0

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, resized_images: tf.Tensor) -> tf.Tensor:
        """Resized RGB images (0..255, padding included) mapped to [-1, 1]."""
        return (2.0 / 255.0) * tf.cast(resized_images, tf.float32) - 1.0

    # ------------------------------------------------------------------ layers
    def _unique(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def _conv_bn(self, x: Any, filters: int, kernel: int | tuple[int, int], strides: int = 1,
                 name: str | None = None) -> Any:
        """Convolution (no bias) -> BatchNorm (no gamma) -> ReLU."""
        base = name or self._unique("conv2d")
        x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=base)(x)
        x = FusedBatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, scale=False, name=f"{base}_bn")(x)
        return keras.layers.Activation("relu", name=f"{base}_ac")(x)

    def _max_pool(self, x: Any, strides: int) -> Any:
        return keras.layers.MaxPooling2D(3, strides=strides, padding="same", name=self._unique("max_pool"))(x)

    def _residual_block(self, x: Any, kind: str, index: int, scale: float, activation: bool = True) -> Any:
        name = f"{kind}_{index}"
        if kind == "block35":
            branches = [
                self._conv_bn(x, 32, 1),
                self._conv_bn(self._conv_bn(x, 32, 1), 32, 3),
                self._conv_bn(self._conv_bn(self._conv_bn(x, 32, 1), 48, 3), 64, 3),
            ]
        elif kind == "block17":
            branches = [
                self._conv_bn(x, 192, 1),
                self._conv_bn(self._conv_bn(self._conv_bn(x, 128, 1), 160, (1, 7)), 192, (7, 1)),
            ]
        else:  # block8
            branches = [
                self._conv_bn(x, 192, 1),
                self._conv_bn(self._conv_bn(self._conv_bn(x, 192, 1), 224, (1, 3)), 256, (3, 1)),
            ]
        mixed = keras.layers.Concatenate(name=f"{name}_mixed")(branches)
        up = keras.layers.Conv2D(int(x.shape[-1]), 1, padding="same", use_bias=True, name=f"{name}_conv")(mixed)
        x = ScaledResidual(scale, name=f"{name}_scale")([x, up])
        if activation:
            x = keras.layers.Activation("relu", name=f"{name}_ac")(x)
        return x

    def build_proposal_model(self) -> keras.Model:
        """Preprocessed ``[B, H, W, 3]`` -> ``block17_20_ac`` ``[B, ceil(H/16), ceil(W/16), 1088]``."""
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        x = self._conv_bn(inputs, 32, 3, strides=2)
        x = self._conv_bn(x, 32, 3)
        x = self._conv_bn(x, 64, 3)
        x = self._max_pool(x, 2)
        x = self._conv_bn(x, 80, 1)
        x = self._conv_bn(x, 192, 3)
        x = self._max_pool(x, 2)
        pool = keras.layers.AveragePooling2D(3, strides=1, padding="same", name="mixed_5b_avg_pool")(x)
        x = keras.layers.Concatenate(name="mixed_5b")([
            self._conv_bn(x, 96, 1),
            self._conv_bn(self._conv_bn(x, 48, 1), 64, 5),
            self._conv_bn(self._conv_bn(self._conv_bn(x, 64, 1), 96, 3), 96, 3),
            self._conv_bn(pool, 64, 1),
        ])
        for i in range(1, 11):
            x = self._residual_block(x, "block35", i, 0.17)
        x = keras.layers.Concatenate(name="mixed_6a")([
            self._conv_bn(x, 384, 3, strides=2),
            self._conv_bn(self._conv_bn(self._conv_bn(x, 256, 1), 256, 3), 384, 3, strides=2),
            self._max_pool(x, 2),
        ])
        for i in range(1, 21):
            x = self._residual_block(x, "block17", i, 0.1)
        return keras.Model(inputs, x, name="inception_resnet_v2_proposal_features")

    def build_box_classifier_model(self, crop_size: int | None = None) -> keras.Model:
        """Proposal crops ``[K, h, w, 1088]`` -> ``conv_7b_ac`` ``[K, ceil(h/2), ceil(w/2), 1536]``."""
        inputs = keras.Input((crop_size, crop_size, self.proposal_channels), name="proposal_feature_maps")
        x = inputs
        x = keras.layers.Concatenate(name="mixed_7a")([
            self._conv_bn(self._conv_bn(x, 256, 1), 384, 3, strides=2),
            self._conv_bn(self._conv_bn(x, 256, 1), 288, 3, strides=2),
            self._conv_bn(self._conv_bn(self._conv_bn(x, 256, 1), 288, 3), 320, 3, strides=2),
            self._max_pool(x, 2),
        ])
        for i in range(1, 10):
            x = self._residual_block(x, "block8", i, 0.2)
        x = self._residual_block(x, "block8", 10, 1.0, activation=False)
        x = self._conv_bn(x, 1536, 1, name="conv_7b")
        return keras.Model(inputs, x, name="inception_resnet_v2_box_classifier_features")

    # ------------------------------------------------------------------ checkpoint
    @staticmethod
    def _scope_map(scope: str, model: keras.Model) -> dict[str, keras.Variable]:
        return numbered_items(scope, [layer for layer in keras2_layer_order(model) if layer.weights])

    def checkpoint_map(self, proposal_model: keras.Model, classifier_model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/`` (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variables."""
        out = self._scope_map(_PROPOSAL_SCOPE, proposal_model)
        out.update(self._scope_map(_CLASSIFIER_SCOPE, classifier_model))
        return out


@register_feature_extractor("faster_rcnn_inception_resnet_v2_keras", meta="faster_rcnn")
def create(config: Message | None = None) -> FasterRcnnInceptionResnetV2:
    """``faster_rcnn_inception_resnet_v2_keras`` from its ``feature_extractor`` message."""
    trainable = bool(config.get("batch_norm_trainable", False)) if config is not None else False
    return FasterRcnnInceptionResnetV2(batch_norm_trainable=trainable)
