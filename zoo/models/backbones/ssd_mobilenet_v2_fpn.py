"""SSD feature extractor ``ssd_mobilenet_v2_fpn_keras`` (SSD MobileNet V2 FPN and FPN-lite).

Bottom-up: ``keras.applications.MobileNetV2`` (as in the original, whose layer overrides only swap in
its own BatchNorm/activation/padding choices; Keras' explicit stride-2 padding equals TF 'SAME' padding
here, so the computation is identical). Its ``block_5_add`` (stride 8), ``block_12_add`` (stride 16)
and ``out_relu`` (stride 32) feed a top-down FPN: 1x1 projections with bias, nearest-neighbour x2
upsampling, sum, then a 3x3 (separable when ``use_depthwise``) conv + BatchNorm + activation per
merged level. Levels above 5 come from stride-2 3x3 conv blocks stacked on the level-5 map.

Checkpoint layout under ``model/_feature_extractor/``: ``classification_backbone/layer_with_weights-N``
(the MobileNetV2), ``_fpn_features_generator/{top_layers/0, residual_blocks/i/0, conv_layers/i/j}`` and
``_coarse_feature_layers/i/j``.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ...errors import ConfigError
from ..layers import variable_attributes
from . import layers_with_weights

__all__ = ["SsdMobileNetV2Fpn", "create"]

# MobileNetV2 layers ending the blocks the original calls layer_4, layer_7, layer_14 and layer_19.
_LEVEL_OUTPUTS = {2: "block_2_add", 3: "block_5_add", 4: "block_12_add", 5: "out_relu"}


class SsdMobileNetV2Fpn:
    """``ssd_mobilenet_v2_fpn_keras`` (see :mod:`zoo.models.ssd` for the feature-extractor contract)."""

    name = "ssd_mobilenet_v2_fpn_keras"
    min_image_dim = 33

    def __init__(self, config: Any, hyperparams: Any) -> None:
        fpn = config["fpn"] if "fpn" in config else None
        self.min_level = int(fpn.get("min_level", 3)) if fpn is not None else 3
        self.max_level = int(fpn.get("max_level", 7)) if fpn is not None else 7
        depth = int(fpn.get("additional_layer_depth", 256)) if fpn is not None else 256
        self.depth_multiplier = float(config.get("depth_multiplier", 1.0))
        self.min_depth = int(config.get("min_depth", 0))
        self.use_depthwise = bool(config.get("use_depthwise", False))
        if self.depth_multiplier != 1.0:
            raise ConfigError(
                f"{self.name}: depth_multiplier {self.depth_multiplier} is not supported (only 1.0, as in the zoo)"
            )
        if bool(config.get("use_explicit_padding", False)):
            raise ConfigError(f"{self.name}: use_explicit_padding is not supported")
        if int(config.get("pad_to_multiple", 1)) not in (0, 1):
            raise ConfigError(f"{self.name}: pad_to_multiple > 1 is not supported")
        if not 2 <= self.min_level <= 5 or self.max_level < self.min_level:
            raise ConfigError(f"{self.name}: fpn levels {self.min_level}-{self.max_level} are not valid (min in 2..5)")
        self.depth = max(int(depth * self.depth_multiplier), self.min_depth)
        self.hyperparams = hyperparams
        self.base_max_level = min(self.max_level, 5)

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Pixel values 0..255 -> [-1, 1]."""
        return (2.0 / 255.0) * tf.cast(images, tf.float32) - 1.0

    def build(self) -> keras.Model:
        """Preprocessed images -> feature maps for levels ``min_level..max_level``."""
        base = keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(None, None, 3), alpha=self.depth_multiplier
        )
        levels = list(range(self.min_level, self.base_max_level + 1))
        backbone = keras.Model(
            base.input, [base.get_layer(_LEVEL_OUTPUTS[lv]).output for lv in levels], name="classification_backbone"
        )
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        feats = backbone(inputs)
        if not isinstance(feats, (list, tuple)):
            feats = [feats]
        n = len(levels)
        top = keras.layers.Conv2D(self.depth, 1, padding="same", use_bias=True, name=f"fpn_top_{n}")(feats[-1])
        outputs = [top]
        for index, level in enumerate(reversed(range(n - 1))):
            residual = keras.layers.Conv2D(
                self.depth, 1, padding="same", use_bias=True, name=f"fpn_residual_{index}"
            )(feats[level])
            up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_upsample_{index}")(outputs[-1])
            merged = keras.layers.Add(name=f"fpn_add_{index}")([up, residual])
            outputs.append(self._conv_block(merged, 1, f"fpn_smooth_{index}"))
        maps = list(reversed(outputs))
        last = maps[-1]
        for i in range(self.base_max_level + 1, self.max_level + 1):
            last = self._conv_block(last, 2, f"coarse_{i - self.base_max_level - 1}")
            maps.append(last)
        return keras.Model(inputs, maps, name=self.name)

    def _conv_block(self, x: Any, stride: int, name: str) -> Any:
        hp = self.hyperparams
        if self.use_depthwise:
            x = keras.layers.SeparableConv2D(
                self.depth, 3, strides=stride, padding="same", use_bias=hp.use_bias(), name=f"{name}_conv"
            )(x)
        else:
            x = keras.layers.Conv2D(
                self.depth, 3, strides=stride, padding="same", use_bias=hp.use_bias(), name=f"{name}_conv"
            )(x)
        if hp.batch_norm:
            x = hp.batch_norm_layer(f"{name}_bn")(x)
        act = hp.activation_layer(f"{name}_act")
        return act(x) if act is not None else x

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        out: dict[str, keras.Variable] = {}
        backbone = model.get_layer("classification_backbone")
        for n, layer in enumerate(layers_with_weights(backbone)):
            for attr, var in variable_attributes(layer):
                out[f"classification_backbone/layer_with_weights-{n}/{attr}"] = var
        gen = "_fpn_features_generator"
        n_levels = self.base_max_level - self.min_level + 1
        _add(out, f"{gen}/top_layers/0", model.get_layer(f"fpn_top_{n_levels}"))
        for index in range(n_levels - 1):
            _add(out, f"{gen}/residual_blocks/{index}/0", model.get_layer(f"fpn_residual_{index}"))
            self._add_block(out, f"{gen}/conv_layers/{index}", model, f"fpn_smooth_{index}")
        for i in range(self.max_level - self.base_max_level):
            self._add_block(out, f"_coarse_feature_layers/{i}", model, f"coarse_{i}")
        return out

    def _add_block(self, out: dict[str, keras.Variable], prefix: str, model: keras.Model, name: str) -> None:
        _add(out, f"{prefix}/0", model.get_layer(f"{name}_conv"))
        if self.hyperparams.batch_norm:
            _add(out, f"{prefix}/1", model.get_layer(f"{name}_bn"))


def _add(out: dict[str, keras.Variable], prefix: str, layer: keras.layers.Layer) -> None:
    for attr, var in variable_attributes(layer):
        out[f"{prefix}/{attr}"] = var


def create(config: Any, hyperparams: Any) -> SsdMobileNetV2Fpn:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return SsdMobileNetV2Fpn(config, hyperparams)
