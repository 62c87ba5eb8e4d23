"""SSD feature extractor ``ssd_mobilenet_v2_keras`` (the original SSD MobileNet V2, no FPN).

Bottom-up: MobileNet V2 with 'same' padding everywhere (:func:`zoo.models.nets.mobilenet_v2.
mobilenet_v2_body`, BatchNorm epsilon 1e-3, fused at inference as in the original, and ReLU6, which
the zoo's ``conv_hyperparams`` also specify). Its ``block_13_expand_relu`` (stride 16, the original's ``layer_15/expansion_output``) and
``out_relu`` (stride 32, ``layer_19``) are the first two feature maps; each further map is a 1x1 conv
block to half the layer depth followed by a stride-2 3x3 conv block (depthwise 3x3 + 1x1 with
``use_depthwise``), with depths ``512, 256, 256, 128`` scaled by ``depth_multiplier`` and at least
``min_depth`` (the original's ``KerasMultiResolutionFeatureMaps``).

Checkpoint layout under ``model/_feature_extractor/``: ``classification_backbone/layer_with_weights-N``
and ``feature_map_generator/convolutions/i/j`` (``j`` counts every layer of map ``i``'s stack:
conv, BatchNorm, activation per block).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import tensorflow as tf

from ....errors import ConfigError
from ...checkpoint_layout import layer_items, layers_with_weights, numbered_items
from ...layers import ConvHyperparams, with_fused_batch_norm
from ...nets.mobilenet_v2 import mobilenet_v2_body
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["SsdMobileNetV2", "create"]

_BACKBONE_OUTPUTS = ("block_13_expand_relu", "out_relu")
_LAYER_DEPTHS = (-1, -1, 512, 256, 256, 128)
# What mobilenet_v2_body hard-codes; an overriding conv_hyperparams must agree.
_BODY_EPSILON = 1e-3


class SsdMobileNetV2:
    """``ssd_mobilenet_v2_keras`` (the contract: :class:`~zoo.models.ssd.SsdFeatureExtractor`)."""

    name = "ssd_mobilenet_v2_keras"
    min_image_dim = 33
    backbone_name = "classification_backbone"

    def __init__(self, config: Message, hyperparams: ConvHyperparams) -> None:
        self.depth_multiplier = float(config.get("depth_multiplier", 1.0))
        self.min_depth = int(config.get("min_depth", 0))
        self.use_depthwise = bool(config.get("use_depthwise", False))
        self.num_layers = int(config.get("num_layers", 6))
        if self.depth_multiplier != 1.0:
            raise ConfigError(f"{self.name}: depth_multiplier {self.depth_multiplier} is not supported (only 1.0)")
        if bool(config.get("use_explicit_padding", False)):
            raise ConfigError(f"{self.name}: use_explicit_padding is not supported")
        if int(config.get("pad_to_multiple", 1)) not in (0, 1):
            raise ConfigError(f"{self.name}: pad_to_multiple > 1 is not supported")
        if not 2 <= self.num_layers <= len(_LAYER_DEPTHS):
            raise ConfigError(f"{self.name}: num_layers must be in 2..{len(_LAYER_DEPTHS)}, got {self.num_layers}")
        if bool(config.get("override_base_feature_extractor_hyperparams", False)):
            hp = hyperparams
            if not hp.batch_norm or hp.activation != "RELU_6" or abs(hp.bn_epsilon - _BODY_EPSILON) > 1e-9 \
                    or not (hp.bn_scale and hp.bn_center):
                raise ConfigError(
                    f"{self.name}: overriding the MobileNet V2 hyperparameters is supported only with its own "
                    f"(batch_norm epsilon {_BODY_EPSILON}, scale and center, RELU_6); got {hp}"
                )
        self.hyperparams = hyperparams

    def depth_of(self, channels: int) -> int:
        """The original's ``depth_fn``: channels times the depth multiplier, at least ``min_depth``."""
        return max(int(channels * self.depth_multiplier), self.min_depth)

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Pixel values 0..255 -> [-1, 1]."""
        return (2.0 / 255.0) * tf.cast(images, tf.float32) - 1.0

    def _blocks(self, index: int) -> list[tuple[str, int, int, int, str]]:
        """Layer stack of extra map ``index``: ``(kind, filters, kernel, stride, name)``; kinds conv/dw."""
        depth = _LAYER_DEPTHS[index]
        name = f"map{index}"
        stack = [("conv", self.depth_of(depth // 2), 1, 1, f"{name}_1x1")]
        if self.use_depthwise:
            stack += [("dw", 0, 3, 2, f"{name}_3x3_depthwise"), ("conv", self.depth_of(depth), 1, 1, f"{name}_3x3")]
        else:
            stack.append(("conv", self.depth_of(depth), 3, 2, f"{name}_3x3"))
        return stack

    def build(self) -> keras.Model:
        """Preprocessed images -> the ``num_layers`` feature maps (strides 16, 32, 64, ...)."""
        body = with_fused_batch_norm(mobilenet_v2_body(self.depth_multiplier, name="mobilenet_v2"))
        backbone = keras.Model(body.input, [body.get_layer(n).output for n in _BACKBONE_OUTPUTS],
                               name=self.backbone_name)
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        maps = list(backbone(inputs))
        hp = self.hyperparams
        for index in range(len(_BACKBONE_OUTPUTS), self.num_layers):
            x = maps[-1]
            for kind, filters, kernel, stride, name in self._blocks(index):
                if kind == "dw":
                    x = keras.layers.DepthwiseConv2D(
                        kernel, strides=stride, padding="same", use_bias=hp.use_bias(), name=f"{name}_conv"
                    )(x)
                else:
                    x = keras.layers.Conv2D(
                        filters, kernel, strides=stride, padding="same", use_bias=hp.use_bias(), name=f"{name}_conv"
                    )(x)
                x = hp.activate(hp.normalize(x, f"{name}_bn"), f"{name}_act")
            maps.append(x)
        return keras.Model(inputs, maps, name=self.name)

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        out = numbered_items(self.backbone_name, layers_with_weights(model.get_layer(self.backbone_name)))
        per_block = 3  # conv, BatchNorm (an identity without batch_norm), activation
        for index in range(len(_BACKBONE_OUTPUTS), self.num_layers):
            for b, (_, _, _, _, name) in enumerate(self._blocks(index)):
                prefix = f"feature_map_generator/convolutions/{index}"
                out.update(layer_items(f"{prefix}/{b * per_block}", model.get_layer(f"{name}_conv")))
                if self.hyperparams.batch_norm:
                    out.update(layer_items(f"{prefix}/{b * per_block + 1}", model.get_layer(f"{name}_bn")))
        return out


@register_feature_extractor("ssd_mobilenet_v2_keras", meta="ssd")
def create(config: Message, hyperparams: ConvHyperparams) -> SsdMobileNetV2:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return SsdMobileNetV2(config, hyperparams)
