"""ResNet V1 as the Keras application lays it out, with the changes the detection extractors make.

Bottleneck blocks with the stride on the first 1x1 convolution and a 1x1 projection shortcut in
each stage's first block; no conv biases; the 7x7 stride-2 stem pads the input by 3 on every side
and runs 'valid' (not TF 'same', which pads 2/3 on an even input); every other convolution and the
3x3 stride-2 max pool use 'same' padding. BatchNorm and activation come from a
:class:`~zoo.models.layers.ConvHyperparams`. Layer names follow the application
(``conv2_block1_1_conv``, ``conv5_block3_out``...).

SSD ResNet FPN builds the whole body (:func:`resnet_v1_body`); Faster R-CNN splits it into the
stem and conv2-conv4 (proposal features) and conv5 (box classifier features).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from ..layers import ConvHyperparams

__all__ = ["RESNET_V1_BLOCKS", "block_layer_order", "resnet_v1_body", "resnet_v1_stage", "resnet_v1_stem"]

# depth -> bottleneck blocks per stage (conv2..conv5).
RESNET_V1_BLOCKS: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_STAGE_FILTERS = {2: 64, 3: 128, 4: 256, 5: 512}


def _conv(x: Any, filters: int, kernel: int, name: str, stride: int = 1, padding: str = "same") -> Any:
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)


def resnet_v1_stem(x: Any, hp: ConvHyperparams, depth: Callable[[int], int] = int) -> Any:
    """``conv1`` (7x7/2, padded by 3, BatchNorm, activation) and the 3x3/2 max pool: stride 4."""
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = _conv(x, depth(64), 7, "conv1_conv", stride=2, padding="valid")
    x = hp.activate(hp.normalize(x, "conv1_bn"), "conv1_relu")
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)


def resnet_v1_stage(
    x: Any, stage: int, blocks: int, hp: ConvHyperparams, depth: Callable[[int], int] = int
) -> Any:
    """Stage ``conv{stage}`` (2..5): ``blocks`` bottleneck blocks, stride 2 except stage 2."""
    filters = _STAGE_FILTERS[stage]
    for b in range(blocks):
        prefix = f"conv{stage}_block{b + 1}_"
        stride = 2 if b == 0 and stage > 2 else 1
        if b == 0:
            shortcut = hp.normalize(_conv(x, depth(4 * filters), 1, prefix + "0_conv", stride=stride), prefix + "0_bn")
        else:
            shortcut = x
        y = hp.activate(hp.normalize(_conv(x, depth(filters), 1, prefix + "1_conv", stride=stride), prefix + "1_bn"),
                        prefix + "1_relu")
        y = hp.activate(hp.normalize(_conv(y, depth(filters), 3, prefix + "2_conv"), prefix + "2_bn"), prefix + "2_relu")
        y = hp.normalize(_conv(y, depth(4 * filters), 1, prefix + "3_conv"), prefix + "3_bn")
        x = hp.activate(keras.layers.Add(name=prefix + "add")([shortcut, y]), prefix + "out")
    return x


def resnet_v1_body(
    blocks: tuple[int, ...],
    hyperparams: ConvHyperparams,
    depth: Callable[[int], int] = int,
    name: str = "classification_backbone",
) -> keras.Model:
    """ResNet V1 without classifier: images -> outputs of stages conv2..conv5 (strides 4, 8, 16, 32).

    ``blocks``: bottleneck blocks per stage; ``hyperparams``: BatchNorm and activation of every layer;
    ``depth``: filter count rule (the original's ``max(int(d * depth_multiplier), min_depth)``).
    """
    inputs = keras.Input((None, None, 3), name="input_image")
    x = resnet_v1_stem(inputs, hyperparams, depth)
    outputs = []
    for stage, count in enumerate(blocks, start=2):
        x = resnet_v1_stage(x, stage, count, hyperparams, depth)
        outputs.append(x)
    return keras.Model(inputs, outputs, name=name)


def block_layer_order(stage: int, blocks: int, batch_norm: bool = True) -> list[str]:
    """Weighted layers of stage ``conv{stage}`` in the order Keras 2 numbered them.

    In a stage's first block the projection shortcut and the last convolution sit at the same graph
    depth and the shortcut was visited first: ``1_conv, 1_bn, 2_conv, 2_bn, 0_conv, 3_conv, 0_bn,
    3_bn``; the other blocks run ``1_conv, 1_bn, 2_conv, 2_bn, 3_conv, 3_bn``.
    """
    order: list[str] = []
    for b in range(1, blocks + 1):
        name = f"conv{stage}_block{b}"
        order += [f"{name}_1_conv", f"{name}_1_bn", f"{name}_2_conv", f"{name}_2_bn"]
        if b == 1:
            order += [f"{name}_0_conv", f"{name}_3_conv", f"{name}_0_bn", f"{name}_3_bn"]
        else:
            order += [f"{name}_3_conv", f"{name}_3_bn"]
    return order if batch_norm else [n for n in order if not n.endswith("_bn")]
