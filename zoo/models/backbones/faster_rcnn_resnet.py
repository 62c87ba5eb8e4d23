"""Faster R-CNN ResNet V1 feature extractors (``faster_rcnn_resnet{50,101,152}_keras``) in Keras 3.

The original wraps ``keras.applications`` ResNet50/101/152 with object-detection overrides, and
this module rebuilds that network layer for layer:

* convolutions have no bias; a strided convolution with a kernel larger than 1 (only the 7x7 stem)
  zero-pads by ``(k - 1) // 2`` before and ``k - 1 - (k - 1) // 2`` after, then runs ``valid``;
  every other convolution (and the 3x3/2 stem max-pool) uses ``same`` padding;
* BatchNorm with ``epsilon=1e-5``, scale and centre; at inference it runs the fused kernel
  (``x * gamma / sqrt(var + eps) + (beta - mean * gamma / sqrt(var + eps))``) as Keras 2 did, which
  keeps the stride-16 features about 7x closer to the original's than Keras 3's unfused arithmetic;
* the residual blocks of ``keras.applications.resnet`` (V1: the stride sits on the first 1x1
  convolution of a stage; the first block of each stage has a projection shortcut).

The first-stage (proposal) extractor is the stem and stages conv2-conv4 (stride 16, 1024 channels);
the second-stage (box classifier) extractor is stage conv5 applied to the cropped proposal features
(2048 channels, stride 2 again).

Checkpoint layout: ``_feature_extractor_for_proposal_features/layer_with_weights-N`` and
``_feature_extractor_for_box_classifier_features/layer_with_weights-N`` (relative to ``model/``),
``N`` numbering weighted layers in the order Keras 2 listed them. Inside a stage's first block that
order is ``1_conv, 1_bn, 2_conv, 2_bn, 0_conv, 3_conv, 0_bn, 3_bn`` (projection shortcut and last
convolution sit at the same graph depth, the shortcut was visited first); other blocks run
``1_conv, 1_bn, 2_conv, 2_bn, 3_conv, 3_bn``.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ..layers import variable_attributes

__all__ = [
    "CHANNEL_MEANS",
    "FasterRcnnResnetV1",
    "FusedInferenceBatchNorm",
    "faster_rcnn_resnet50_keras",
    "faster_rcnn_resnet101_keras",
    "faster_rcnn_resnet152_keras",
]

CHANNEL_MEANS = (123.68, 116.779, 103.939)
"""VGG-style RGB means subtracted by the extractor's ``preprocess``."""

_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.997
# Blocks per stage conv2..conv5.
_DEPTHS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_PROPOSAL_SCOPE = "_feature_extractor_for_proposal_features"
_CLASSIFIER_SCOPE = "_feature_extractor_for_box_classifier_features"


@keras.saving.register_keras_serializable(package="odzoo")
class FusedInferenceBatchNorm(keras.layers.BatchNormalization):
    """BatchNormalization that normalizes with the fused kernel at inference (NHWC float32 input)."""

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if (training and self.trainable) or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return super().call(inputs, training=training, mask=mask)
        gamma = self.gamma if self.scale else tf.ones_like(self.moving_mean)
        beta = self.beta if self.center else tf.zeros_like(self.moving_mean)
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, mean=self.moving_mean, variance=self.moving_variance, epsilon=self.epsilon,
            is_training=False,
        )
        return outputs


class FasterRcnnResnetV1:
    """The ResNet V1 extractor pair of a Faster R-CNN model.

    ``preprocess(images)`` subtracts the channel means from resized RGB images; ``build_proposal_model()``
    maps preprocessed images to the stride-16 ``rpn_features_to_crop``; ``build_box_classifier_model()``
    maps cropped (and max-pooled) proposal features to ``box_classifier_features``;
    ``checkpoint_map(proposal_model, classifier_model)`` keys every variable of both relative to ``model/``
    (both models must come from this instance's build methods).
    """

    first_stage_features_stride = 16
    proposal_channels = 1024

    def __init__(self, depth: int = 50, *, batch_norm_trainable: bool = False) -> None:
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet V1 depth must be one of {sorted(_DEPTHS)}, got {depth}")
        self.depth = depth
        self.name = f"faster_rcnn_resnet{depth}_keras"
        self.batch_norm_trainable = bool(batch_norm_trainable)
        self.blocks = _DEPTHS[depth]
        # Weighted layer names in checkpoint order, filled in by the build methods.
        self.proposal_layer_order: list[str] = []
        self.classifier_layer_order: list[str] = []

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, resized_images: tf.Tensor) -> tf.Tensor:
        """Resized RGB images (0..255, padding included) minus the channel means (3-channel input only)."""
        images = tf.cast(resized_images, tf.float32)
        if images.shape[-1] != 3:
            return images
        return images - tf.constant([[list(CHANNEL_MEANS)]], tf.float32)

    # ------------------------------------------------------------------ layers
    @staticmethod
    def _conv(filters: int, kernel: int, stride: int, name: str) -> keras.layers.Conv2D:
        padding = "valid" if stride > 1 and kernel > 1 else "same"
        return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)

    @staticmethod
    def _bn(name: str) -> keras.layers.BatchNormalization:
        return FusedInferenceBatchNorm(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM, name=name)

    def _block(self, x: Any, filters: int, stride: int, shortcut: bool, name: str, order: list[str]) -> Any:
        """One bottleneck block; appends its weighted layers to ``order`` in the checkpoint's order."""
        if shortcut:
            short = self._bn(f"{name}_0_bn")(self._conv(4 * filters, 1, stride, f"{name}_0_conv")(x))
        else:
            short = x
        y = self._conv(filters, 1, stride, f"{name}_1_conv")(x)
        y = keras.layers.ReLU(name=f"{name}_1_relu")(self._bn(f"{name}_1_bn")(y))
        y = self._conv(filters, 3, 1, f"{name}_2_conv")(y)
        y = keras.layers.ReLU(name=f"{name}_2_relu")(self._bn(f"{name}_2_bn")(y))
        y = self._bn(f"{name}_3_bn")(self._conv(4 * filters, 1, 1, f"{name}_3_conv")(y))
        order += [f"{name}_1_conv", f"{name}_1_bn", f"{name}_2_conv", f"{name}_2_bn"]
        if shortcut:
            order += [f"{name}_0_conv", f"{name}_3_conv", f"{name}_0_bn", f"{name}_3_bn"]
        else:
            order += [f"{name}_3_conv", f"{name}_3_bn"]
        y = keras.layers.Add(name=f"{name}_add")([short, y])
        return keras.layers.ReLU(name=f"{name}_out")(y)

    def _stage(self, x: Any, filters: int, blocks: int, stride: int, name: str, order: list[str]) -> Any:
        x = self._block(x, filters, stride, True, f"{name}_block1", order)
        for i in range(2, blocks + 1):
            x = self._block(x, filters, 1, False, f"{name}_block{i}", order)
        return x

    def build_proposal_model(self) -> keras.Model:
        """Preprocessed ``[B, H, W, 3]`` -> conv4 output ``[B, ceil(H/16), ceil(W/16), 1024]``."""
        order: list[str] = []
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
        x = self._conv(64, 7, 2, "conv1_conv")(x)
        x = keras.layers.ReLU(name="conv1_relu")(self._bn("conv1_bn")(x))
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
        order += ["conv1_conv", "conv1_bn"]
        for stage, (filters, blocks, stride) in enumerate(
            zip((64, 128, 256), self.blocks[:3], (1, 2, 2)), start=2
        ):
            x = self._stage(x, filters, blocks, stride, f"conv{stage}", order)
        self.proposal_layer_order = order
        return keras.Model(inputs, x, name=f"resnet{self.depth}_v1_proposal_features")

    def build_box_classifier_model(self, crop_size: int | None = None) -> keras.Model:
        """Proposal crops ``[K, h, w, 1024]`` -> conv5 output ``[K, ceil(h/2), ceil(w/2), 2048]``."""
        order: list[str] = []
        inputs = keras.Input((crop_size, crop_size, self.proposal_channels), name="proposal_feature_maps")
        x = self._stage(inputs, 512, self.blocks[3], 2, "conv5", order)
        self.classifier_layer_order = order
        return keras.Model(inputs, x, name=f"resnet{self.depth}_v1_box_classifier_features")

    # ------------------------------------------------------------------ checkpoint
    @staticmethod
    def _scope_map(scope: str, model: keras.Model, order: list[str]) -> dict[str, keras.Variable]:
        out = {}
        for n, name in enumerate(order):
            for attr, var in variable_attributes(model.get_layer(name)):
                out[f"{scope}/layer_with_weights-{n}/{attr}"] = var
        return out

    def checkpoint_map(self, proposal_model: keras.Model, classifier_model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/`` (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variables."""
        out = self._scope_map(_PROPOSAL_SCOPE, proposal_model, self.proposal_layer_order)
        out.update(self._scope_map(_CLASSIFIER_SCOPE, classifier_model, self.classifier_layer_order))
        return out


def _options(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    return {"batch_norm_trainable": bool(config.get("batch_norm_trainable", False))}


def faster_rcnn_resnet50_keras(config: Any = None) -> FasterRcnnResnetV1:
    """``faster_rcnn_resnet50_keras`` from its ``feature_extractor`` message."""
    return FasterRcnnResnetV1(50, **_options(config))


def faster_rcnn_resnet101_keras(config: Any = None) -> FasterRcnnResnetV1:
    """``faster_rcnn_resnet101_keras`` from its ``feature_extractor`` message."""
    return FasterRcnnResnetV1(101, **_options(config))


def faster_rcnn_resnet152_keras(config: Any = None) -> FasterRcnnResnetV1:
    """``faster_rcnn_resnet152_keras`` from its ``feature_extractor`` message."""
    return FasterRcnnResnetV1(152, **_options(config))
