"""SSD feature extractors ``ssd_efficientnet-b{0..7}_bifpn_keras`` (EfficientDet D0-D7).

Backbone: the EfficientNet of the TensorFlow Model Garden that the original uses (not
``keras.applications``, which adds input rescaling/normalization layers): stem, mobile inverted
bottleneck blocks with squeeze-and-excitation, 'same' padding everywhere, simple swish, BatchNorm
epsilon 1e-3, and the classification top (1x1 conv, BatchNorm, 1000-way dense) whose variables the
checkpoints carry although detection never runs them. Levels 3-5 feed a BiFPN: extra levels by 3x3/2
max pooling (after a 1x1 conv + BatchNorm where channels differ), then ``num_iterations`` top-down and
bottom-up passes whose nodes resample their inputs, combine them with fast normalized attention
(``relu(w) / (sum relu(w) + 1e-4)``) and apply activation -> separable 3x3 conv -> BatchNorm.

Checkpoint layout under ``model/_feature_extractor/``: ``_efficientnet/layer_with_weights-N`` (the
backbone up to level 5), ``classification_backbone/layer_with_weights-N`` (the classification top),
``_bifpn_stage/{node_input_blocks/n/i/1/j, node_combine_op/n, node_post_combine_block/n/j}``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from ....errors import ConfigError
from ...checkpoint_layout import layer_items, layers_with_weights, numbered_items
from ...layers import ConvHyperparams, make_divisible
from ...registry import register_feature_extractor

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["BiFPNCombine", "EfficientNetBiFPN", "create", "efficientnet"]

# (width, depth) coefficients of EfficientNet-B0..B7.
_COEFFICIENTS = {
    0: (1.0, 1.0), 1: (1.0, 1.1), 2: (1.1, 1.2), 3: (1.2, 1.4),
    4: (1.4, 1.8), 5: (1.6, 2.2), 6: (1.8, 2.6), 7: (2.0, 3.1),
}
# EfficientDet defaults per backbone version: (bifpn num_iterations, num_filters).
_BIFPN_DEFAULTS = {0: (3, 64), 1: (4, 88), 2: (5, 112), 3: (6, 160), 4: (7, 224), 5: (7, 288), 6: (8, 384), 7: (8, 384)}
# (input_filters, output_filters, kernel, repeats, expand_ratio, stride) of the seven stacks; SE ratio 0.25.
_BLOCKS = (
    (32, 16, 3, 1, 1, 1),
    (16, 24, 3, 2, 6, 2),
    (24, 40, 5, 2, 6, 2),
    (40, 80, 3, 3, 6, 2),
    (80, 112, 5, 3, 6, 1),
    (112, 192, 5, 4, 6, 2),
    (192, 320, 3, 1, 6, 1),
)
# Backbone endpoints of pyramid levels 1-5 (the original's "stack_2/block_1/add" etc.; Keras 3 layer
# names cannot contain "/", so "__" separates the parts).
_LEVEL_ENDPOINTS = {
    1: "stack_0__block_0__project_bn",
    2: "stack_1__block_1__add",
    3: "stack_2__block_1__add",
    4: "stack_4__block_2__add",
    5: "stack_6__block_0__project_bn",
}
_BN_EPSILON = 1e-3


def efficientnet(version: int) -> keras.Model:
    """The Model Garden EfficientNet-B``version`` (no input rescaling) with its 1000-class top."""
    width, depth = _COEFFICIENTS[version]

    def filters(n: int) -> int:
        return make_divisible(n * width, 8)

    def conv_bn(x: Any, out: int | None, kernel: int, stride: int, act: bool, name: str, depthwise: bool = False) -> Any:
        if depthwise:
            x = keras.layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv2d")(x)
        else:
            x = keras.layers.Conv2D(out, kernel, strides=stride, padding="same", use_bias=False, name=f"{name}_conv2d")(x)
        x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
        return keras.layers.Activation("swish", name=f"{name}_activation")(x) if act else x

    inputs = keras.Input((None, None, 3), name="image")
    x = conv_bn(inputs, filters(32), 3, 2, True, "stem")
    for stack, (fin, fout, kernel, repeats, expand, stride) in enumerate(_BLOCKS):
        fin, fout = filters(fin), filters(fout)
        for b in range(int(math.ceil(depth * repeats))):
            prefix = f"stack_{stack}__block_{b}__"
            block_in = fin if b == 0 else fout
            block_stride = stride if b == 0 else 1
            hidden = block_in * expand
            y = x
            if expand != 1:
                y = conv_bn(y, hidden, 1, 1, True, prefix + "expand")
            y = conv_bn(y, None, kernel, block_stride, True, prefix + "depthwise", depthwise=True)
            se = keras.layers.GlobalAveragePooling2D(name=prefix + "se_squeeze")(y)
            se = keras.layers.Reshape((1, 1, hidden), name=prefix + "se_reshape")(se)
            se = keras.layers.Conv2D(max(1, int(block_in * 0.25)), 1, padding="same", name=prefix + "se_reduce_conv2d")(se)
            se = keras.layers.Activation("swish", name=prefix + "se_reduce_activation")(se)
            se = keras.layers.Conv2D(hidden, 1, padding="same", name=prefix + "se_expand_conv2d")(se)
            se = keras.layers.Activation("sigmoid", name=prefix + "se_expand_activation")(se)
            y = keras.layers.Multiply(name=prefix + "se_excite")([y, se])
            y = conv_bn(y, fout, 1, 1, False, prefix + "project")
            if block_stride == 1 and block_in == fout:
                y = keras.layers.Add(name=prefix + "add")([y, x])
            x = y
    x = conv_bn(x, filters(1280), 1, 1, True, "top")
    x = keras.layers.GlobalAveragePooling2D(name="top_pool")(x)
    x = keras.layers.Dense(1000, name="logits")(x)
    return keras.Model(inputs, x, name=f"efficientnet-b{version}")


@keras.saving.register_keras_serializable(package="odzoo")
class BiFPNCombine(keras.layers.Layer):
    """Combines same-shaped feature maps: ``sum``, ``weighted_sum``, ``attention`` or ``fast_attention``."""

    def __init__(self, combine_method: str = "fast_attention", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if combine_method not in ("sum", "weighted_sum", "attention", "fast_attention"):
            raise ConfigError(f"BiFPN combine_method {combine_method!r} is not supported")
        self.combine_method = combine_method
        self.per_input_weights = None

    def build(self, input_shape: Any) -> None:
        if self.combine_method != "sum":
            self.per_input_weights = self.add_weight(
                name="bifpn_combine_weights", shape=(len(input_shape), 1), initializer="ones"
            )

    def call(self, inputs: list[Any]) -> Any:
        if self.combine_method == "sum":
            return keras.ops.sum(keras.ops.stack(inputs, axis=0), axis=0)
        w = self.per_input_weights
        if self.combine_method == "attention":
            w = keras.ops.softmax(w, axis=-1)
        elif self.combine_method == "fast_attention":
            w = keras.ops.relu(w)
            w = w / (keras.ops.sum(w) + 0.0001)
        return keras.ops.squeeze(keras.ops.matmul(keras.ops.stack(inputs, axis=-1), w), axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "combine_method": self.combine_method}


@dataclasses.dataclass
class _Node:
    name: str
    level: int
    inputs: list[str]
    combine: bool = True


def bifpn_nodes(min_level: int, max_level: int, input_max_level: int, iterations: int) -> list[_Node]:
    """The BiFPN graph of the original: extra input levels, then per iteration top-down + bottom-up nodes."""
    nodes = [
        _Node(f"0_up_lvl_{lv}", lv, [f"0_up_lvl_{lv - 1}"], combine=False)
        for lv in range(input_max_level + 1, max_level + 1)
    ]
    for it in range(1, iterations + 1):
        for lv in reversed(range(min_level, max_level)):
            first = f"{it - 1}_up_lvl_{lv}" if (lv > min_level or it == 1) else f"{it - 1}_dn_lvl_{lv}"
            nodes.append(_Node(f"{it}_dn_lvl_{lv}", lv, [first, nodes[-1].name]))
        for lv in range(min_level + 1, max_level + 1):
            ins = [f"{it - 1}_up_lvl_{lv}"]
            if lv < max_level:
                ins.append(f"{it}_dn_lvl_{lv}")
            ins.append(nodes[-1].name)
            nodes.append(_Node(f"{it}_up_lvl_{lv}", lv, ins))
    return nodes


class EfficientNetBiFPN:
    """``ssd_efficientnet-b*_bifpn_keras`` (the contract: :class:`~zoo.models.ssd.SsdFeatureExtractor`)."""

    min_image_dim = 129

    def __init__(self, config: Message, hyperparams: ConvHyperparams) -> None:
        kind = str(config.get("type", ""))
        try:
            self.version = int(kind.split("efficientnet-b")[1].split("_")[0])
        except (IndexError, ValueError):
            raise ConfigError(f"not an EfficientNet BiFPN feature extractor type: {kind!r}") from None
        if self.version not in _COEFFICIENTS:
            raise ConfigError(f"EfficientNet-B{self.version} does not exist (B0-B7)")
        self.name = kind
        iterations, num_filters = _BIFPN_DEFAULTS[self.version]
        bifpn = config["bifpn"] if "bifpn" in config else None
        get = (lambda f, d: bifpn.get(f, d)) if bifpn is not None else (lambda f, d: d)
        self.min_level = int(get("min_level", 3))
        self.max_level = int(get("max_level", 7))
        self.iterations = int(get("num_iterations", iterations))
        self.num_filters = max(int(get("num_filters", num_filters)), int(config.get("min_depth", 0)))
        self.combine_method = str(get("combine_method", "fast_attention"))
        # use_native_resize_op only switches between two exact nearest-neighbour upsamplings.
        if float(config.get("depth_multiplier", 1.0)) != 1.0:
            raise ConfigError(f"{kind}: depth_multiplier other than 1.0 is not supported (as in the original)")
        if int(config.get("pad_to_multiple", 1)) not in (0, 1):
            raise ConfigError(f"{kind}: pad_to_multiple > 1 is not supported")
        if not 3 <= self.min_level <= 5 or self.max_level < self.min_level:
            raise ConfigError(f"{kind}: bifpn levels {self.min_level}-{self.max_level} are not valid (min in 3..5)")
        self.backbone_max_level = min(5, self.max_level)
        self.hyperparams = hyperparams
        self._classifiers: dict[int, keras.Model] = {}

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """ImageNet mean/std normalization of 0..255 RGB."""
        offset = tf.constant([[[0.485, 0.456, 0.406]]], tf.float32)
        scale = tf.constant([[[0.229, 0.224, 0.225]]], tf.float32)
        return (tf.cast(images, tf.float32) / 255.0 - offset) / scale

    def build(self) -> keras.Model:
        """Preprocessed images -> BiFPN feature maps for levels ``min_level..max_level``."""
        classifier = efficientnet(self.version)
        levels = list(range(self.min_level, self.backbone_max_level + 1))
        backbone = keras.Model(
            classifier.input, [classifier.get_layer(_LEVEL_ENDPOINTS[lv]).output for lv in levels], name="efficientnet"
        )
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        feats = backbone(inputs)
        if not isinstance(feats, (list, tuple)):
            feats = [feats]
        hp = self.hyperparams
        maps: dict[str, Any] = {f"0_up_lvl_{lv}": f for lv, f in zip(levels, feats)}
        channels: dict[str, int | None] = {name: None for name in maps}
        level_of = {f"0_up_lvl_{lv}": lv for lv in levels}
        nodes = bifpn_nodes(self.min_level, self.max_level, self.backbone_max_level, self.iterations)
        for n, node in enumerate(nodes):
            resampled = []
            for i, src in enumerate(node.inputs):
                x = maps[src]
                prefix = f"node_{n}_input_{i}"
                if channels[src] != self.num_filters:
                    x = keras.layers.Conv2D(
                        self.num_filters, 1, padding="same", use_bias=hp.use_bias(), name=f"{prefix}_conv"
                    )(x)
                    x = hp.normalize(x, f"{prefix}_bn")
                step = node.level - level_of[src]
                if step > 0:
                    size = 2**step
                    x = keras.layers.MaxPooling2D(size + 1, strides=size, padding="same", name=f"{prefix}_down")(x)
                elif step < 0:
                    x = keras.layers.UpSampling2D(2 ** (-step), interpolation="nearest", name=f"{prefix}_up")(x)
                resampled.append(x)
            if len(resampled) > 1:
                x = BiFPNCombine(self.combine_method, name=f"node_{n}_combine")(resampled)
            else:
                x = resampled[0]
            if node.combine:
                x = hp.activate(x, f"node_{n}_act")
                x = keras.layers.SeparableConv2D(
                    self.num_filters, 3, padding="same", use_bias=hp.use_bias(), name=f"node_{n}_conv"
                )(x)
                x = hp.normalize(x, f"node_{n}_bn")
            maps[node.name] = x
            channels[node.name] = self.num_filters
            level_of[node.name] = node.level
        outputs = [maps[node.name] for node in nodes[-(self.max_level - self.min_level + 1):]]
        model = keras.Model(inputs, outputs, name=self.name)
        self._classifiers[id(model)] = classifier
        return model

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        backbone = model.get_layer("efficientnet")
        in_backbone = {id(layer) for layer in backbone.layers}
        out = numbered_items("_efficientnet", layers_with_weights(backbone))
        classifier = self._classifiers.get(id(model))
        if classifier is None:
            raise ValueError("checkpoint_map needs a model returned by this extractor's build()")
        for n, layer in enumerate(layers_with_weights(classifier)):
            if id(layer) not in in_backbone:
                out.update(layer_items(f"classification_backbone/layer_with_weights-{n}", layer))
        names = {layer.name for layer in model.layers}
        nodes = bifpn_nodes(self.min_level, self.max_level, self.backbone_max_level, self.iterations)
        stage = "_bifpn_stage"
        for n, node in enumerate(nodes):
            for i in range(len(node.inputs)):
                for j, suffix in enumerate(("conv", "bn")):
                    name = f"node_{n}_input_{i}_{suffix}"
                    if name in names:
                        out.update(layer_items(f"{stage}/node_input_blocks/{n}/{i}/1/{j}", model.get_layer(name)))
            if f"node_{n}_combine" in names:
                for var in model.get_layer(f"node_{n}_combine").weights:
                    out[f"{stage}/node_combine_op/{n}/bifpn_combine_weights"] = var
            if node.combine:
                for j, suffix in ((1, "conv"), (2, "bn")):
                    if f"node_{n}_{suffix}" in names:
                        out.update(layer_items(f"{stage}/node_post_combine_block/{n}/{j}", model.get_layer(f"node_{n}_{suffix}")))
        return out


@register_feature_extractor(*(f"ssd_efficientnet-b{i}_bifpn_keras" for i in _COEFFICIENTS), meta="ssd")
def create(config: Message, hyperparams: ConvHyperparams) -> EfficientNetBiFPN:
    """Factory: ``feature_extractor`` message + its conv hyperparams -> extractor."""
    return EfficientNetBiFPN(config, hyperparams)
