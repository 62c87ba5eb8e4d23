"""The top-down feature pyramid of the SSD FPN feature extractors (``KerasFpnTopDownFeatureMaps``).

:class:`FpnFeatureExtractor` is the base of every SSD extractor with an FPN: a subclass provides
``name``, ``min_image_dim``, ``preprocess`` and :meth:`FpnFeatureExtractor.backbone` (a model giving
the bottom-up maps of levels 2..5); the pyramid, its coarse levels and its checkpoint layout are here.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import keras

from ..errors import ConfigError
from .checkpoint_layout import layer_items, layers_with_weights, numbered_items
from .layers import ConvHyperparams

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

    from ..pipeline_config import Message

__all__ = ["FpnFeatureExtractor"]


class FpnFeatureExtractor(abc.ABC):
    """What the SSD FPN feature extractors share.

    Levels ``min_level..min(max_level, 5)`` are merged top down: the top one is a 1x1 projection with
    bias (no activation), every lower one is the 2x nearest-neighbour upsampled map above plus a 1x1
    projection (with bias) of the backbone map, followed by a 3x3 conv block (separable with
    ``use_depthwise``). Levels above 5 are stride-2 3x3 conv blocks on the previous map. Checkpoint
    layout under ``model/_feature_extractor/``: ``classification_backbone/layer_with_weights-N``,
    ``_fpn_features_generator/{top_layers/0, residual_blocks/i/0, conv_layers/i/j}``,
    ``_coarse_feature_layers/i/j``.
    """

    name = "fpn"
    min_image_dim = 33
    backbone_name = "classification_backbone"
    supports_depthwise = True

    def __init__(self, config: Message, hyperparams: ConvHyperparams) -> None:
        fpn = config["fpn"] if "fpn" in config else None
        get = (lambda f, d: fpn.get(f, d)) if fpn is not None else (lambda f, d: d)
        self.min_level = int(get("min_level", 3))
        self.max_level = int(get("max_level", 7))
        self.depth_multiplier = float(config.get("depth_multiplier", 1.0))
        self.min_depth = int(config.get("min_depth", 0))
        self.use_depthwise = bool(config.get("use_depthwise", False)) and self.supports_depthwise
        self.override_base_hyperparams = bool(config.get("override_base_feature_extractor_hyperparams", False))
        if self.depth_multiplier <= 0:
            raise ConfigError(f"{self.name}: depth_multiplier must be positive, got {self.depth_multiplier}")
        if bool(config.get("use_explicit_padding", False)):
            raise ConfigError(f"{self.name}: use_explicit_padding is not supported")
        if int(config.get("pad_to_multiple", 1)) not in (0, 1):
            raise ConfigError(f"{self.name}: pad_to_multiple > 1 is not supported")
        if not 2 <= self.min_level <= 5 or self.max_level < self.min_level:
            raise ConfigError(f"{self.name}: fpn levels {self.min_level}-{self.max_level} are not valid (min in 2..5)")
        self.depth = self.depth_of(int(get("additional_layer_depth", 256)))
        self.hyperparams = hyperparams
        self.base_max_level = min(self.max_level, 5)

    def depth_of(self, channels: int) -> int:
        """The original's ``depth_fn``: channels times the depth multiplier, at least ``min_depth``."""
        return max(int(channels * self.depth_multiplier), self.min_depth)

    @abc.abstractmethod
    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """RGB 0..255 ``[B,H,W,3]`` (before resizing) -> the network's input scale."""

    @abc.abstractmethod
    def backbone(self) -> keras.Model:
        """A model named :attr:`backbone_name` mapping images to the maps of levels 2, 3, 4 and 5."""

    def build(self) -> keras.Model:
        """Preprocessed images -> feature maps for levels ``min_level..max_level``."""
        backbone = self.backbone()
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        feats = backbone(inputs)
        feats = feats[self.min_level - 2:self.base_max_level - 1]
        hp = self.hyperparams
        n = len(feats)
        top = keras.layers.Conv2D(self.depth, 1, padding="same", use_bias=True, name=f"fpn_top_{n}")(feats[-1])
        outputs = [top]
        for index, level in enumerate(reversed(range(n - 1))):
            residual = keras.layers.Conv2D(
                self.depth, 1, padding="same", use_bias=True, name=f"fpn_residual_{index}"
            )(feats[level])
            up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"fpn_upsample_{index}")(outputs[-1])
            merged = keras.layers.Add(name=f"fpn_add_{index}")([up, residual])
            outputs.append(hp.conv_block(merged, self.depth, 3, 1, f"fpn_smooth_{index}", self.use_depthwise))
        maps = list(reversed(outputs))
        last = maps[-1]
        for i in range(self.max_level - self.base_max_level):
            last = hp.conv_block(last, self.depth, 3, 2, f"coarse_{i}", self.use_depthwise)
            maps.append(last)
        return keras.Model(inputs, maps, name=self.name)

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        out = numbered_items(self.backbone_name, layers_with_weights(model.get_layer(self.backbone_name)))
        gen = "_fpn_features_generator"
        n_levels = self.base_max_level - self.min_level + 1
        out.update(layer_items(f"{gen}/top_layers/0", model.get_layer(f"fpn_top_{n_levels}")))
        hp = self.hyperparams
        for index in range(n_levels - 1):
            out.update(layer_items(f"{gen}/residual_blocks/{index}/0", model.get_layer(f"fpn_residual_{index}")))
            out.update(hp.block_variables(model, f"{gen}/conv_layers/{index}", f"fpn_smooth_{index}"))
        for i in range(self.max_level - self.base_max_level):
            out.update(hp.block_variables(model, f"_coarse_feature_layers/{i}", f"coarse_{i}"))
        return out
