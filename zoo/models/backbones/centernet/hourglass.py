"""Hourglass CenterNet backbones in Keras 3: Hourglass-104 (two stacks) and the one-stack 10/20/32/52.

The network follows the original CenterNet/ExtremeNet Hourglass: a stride-4 input stem (7x7
conv + strided residual block), then hourglass (encoder-decoder) stacks joined by 1x1
"intermediate" convolutions and a residual block. Each stack ends in a 3x3 conv block whose output
is one feature map for the CenterNet heads, so ``build()`` returns one stride-4 map per stack
(two for Hourglass-104).

Every weighted layer is named after its attribute path in the original object graph with ``.`` for
``/`` (e.g. ``hourglass_network.0.encoder_block2.0.skip.conv``), so the checkpoint key of each
variable is recovered from the layer name: ``_network/<path>/<attribute>``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from ...checkpoint_layout import layer_items
from ...registry import register_feature_extractor
from . import channel_normalize, feature_extractor_options

if TYPE_CHECKING:  # pragma: no cover
    from ....pipeline_config import Message

__all__ = ["HOURGLASS_104", "HOURGLASS_SPECS", "HourglassBackbone", "HourglassSpec", "build_hourglass"]

_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.1  # as the original sets it (Keras convention: weight of the old moving value)
_PREFIX = "_network"


@dataclass(frozen=True)
class HourglassSpec:
    """Shape of a stacked hourglass network.

    ``channel_dims[0]`` is the stem's 7x7 conv width, ``channel_dims[1]`` the stem output and the
    width of the stacks' outer level; ``channel_dims[1:]`` are the widths of the nested levels.
    ``blocks_per_stage[i]`` residual blocks per encoder/decoder at level ``i``; the last entry is the
    number of blocks at the innermost level.
    """

    channel_dims: tuple[int, ...]
    blocks_per_stage: tuple[int, ...]
    num_stages: int
    num_hourglasses: int


HOURGLASS_104 = HourglassSpec(
    channel_dims=(128, 256, 256, 384, 384, 384, 512),
    blocks_per_stage=(2, 2, 2, 2, 2, 4),
    num_stages=5,
    num_hourglasses=2,
)


def _single_stack(input_channels: int, stage_channels: tuple[int, ...], blocks: tuple[int, ...]) -> HourglassSpec:
    return HourglassSpec(
        channel_dims=(input_channels, *stage_channels),
        blocks_per_stage=blocks,
        num_stages=len(stage_channels) - 1,
        num_hourglasses=1,
    )


# feature_extractor type -> network, with the base widths the original extractor uses for each.
HOURGLASS_SPECS: dict[str, HourglassSpec] = {
    "hourglass_104": HOURGLASS_104,
    "hourglass_10": _single_stack(32, (64, 64), (1, 1)),
    "hourglass_20": _single_stack(48, (96, 96, 144), (1, 2, 2)),
    "hourglass_32": _single_stack(48, (96, 96, 144, 144), (2, 2, 2, 2)),
    "hourglass_52": _single_stack(64, (128, 128, 192, 192, 192, 256), (2, 2, 2, 2, 2, 4)),
}


class _Builder:
    """Creates the functional graph; layer names encode the original attribute paths."""

    @staticmethod
    def _name(path: str) -> str:
        return path.replace("/", ".")

    def conv_block(self, x: Any, path: str, kernel_size: int, filters: int, stride: int = 1,
                   relu: bool = True) -> Any:
        """Zero-pad (k>1) + conv (no bias) + BatchNorm (+ ReLU): the original ``ConvolutionalBlock``."""
        if kernel_size > 1:
            pad = kernel_size // 2
            x = keras.layers.ZeroPadding2D(pad, name=self._name(f"{path}/pad"))(x)
        x = keras.layers.Conv2D(filters, kernel_size, strides=stride, padding="valid", use_bias=False,
                                name=self._name(f"{path}/conv"))(x)
        x = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM,
                                            name=self._name(f"{path}/norm"))(x)
        if relu:
            x = keras.layers.ReLU(name=self._name(f"{path}/relu"))(x)
        return x

    def residual_block(self, x: Any, path: str, filters: int, stride: int = 1, skip_conv: bool = False) -> Any:
        """conv_block(3x3, stride) -> 3x3 conv + BN, plus (projected) shortcut, then ReLU."""
        net = self.conv_block(x, f"{path}/conv_block", 3, filters, stride=stride)
        net = keras.layers.Conv2D(filters, 3, strides=1, padding="same", use_bias=False,
                                  name=self._name(f"{path}/conv"))(net)
        net = keras.layers.BatchNormalization(epsilon=_BN_EPSILON, momentum=_BN_MOMENTUM,
                                              name=self._name(f"{path}/norm"))(net)
        shortcut = self.conv_block(x, f"{path}/skip", 1, filters, stride=stride, relu=False) if skip_conv else x
        net = keras.layers.Add(name=self._name(f"{path}/add"))([net, shortcut])
        return keras.layers.ReLU(name=self._name(f"{path}/relu"))(net)

    def repeated_blocks(self, x: Any, path: str, out_channels: int, num_blocks: int, in_channels: int,
                        initial_stride: int = 1, residual_channels: int | None = None) -> Any:
        """``num_blocks`` residual blocks; only the last one maps to ``out_channels``."""
        residual_channels = out_channels if residual_channels is None else residual_channels
        channels = in_channels
        for i in range(num_blocks - 1):
            stride = initial_stride if i == 0 else 1
            x = self.residual_block(x, f"{path}/{i}", residual_channels, stride=stride,
                                    skip_conv=stride > 1 or channels != residual_channels)
            channels = residual_channels
        last = num_blocks - 1
        stride = initial_stride if last == 0 else 1
        x = self.residual_block(x, f"{path}/{last}", out_channels, stride=stride,
                                skip_conv=stride > 1 or channels != out_channels)
        return x

    def encoder_decoder(self, x: Any, path: str, num_stages: int, channel_dims: Sequence[int],
                        blocks_per_stage: Sequence[int]) -> Any:
        """One hourglass level: same-resolution branch + downsampled recursive branch, upsampled and added."""
        out_channels, down_channels = channel_dims[0], channel_dims[1]
        encoded = self.repeated_blocks(x, f"{path}/encoder_block1", out_channels, blocks_per_stage[0],
                                       in_channels=out_channels)
        down = self.repeated_blocks(x, f"{path}/encoder_block2", down_channels, blocks_per_stage[0],
                                    in_channels=out_channels, initial_stride=2)
        if num_stages > 1:
            inner = self.encoder_decoder(down, f"{path}/inner_block/0", num_stages - 1, channel_dims[1:],
                                         blocks_per_stage[1:])
        else:
            inner = self.repeated_blocks(down, f"{path}/inner_block", down_channels, blocks_per_stage[1],
                                         in_channels=down_channels)
        decoded = self.repeated_blocks(inner, f"{path}/decoder_block", out_channels, blocks_per_stage[0],
                                       in_channels=down_channels, residual_channels=down_channels)
        upsampled = keras.layers.UpSampling2D(2, interpolation="nearest",
                                              name=self._name(f"{path}/upsample"))(decoded)
        return keras.layers.Add(name=self._name(f"{path}/merge_features"))([encoded, upsampled])


def build_hourglass(spec: HourglassSpec = HOURGLASS_104, name: str = "hourglass") -> keras.Model:
    """A functional stacked-hourglass model: ``[B,H,W,3]`` -> list of ``num_hourglasses`` stride-4 maps.

    ``H`` and ``W`` must be multiples of ``4 * 2**num_stages`` (128 for Hourglass-104) so that the
    decoder's upsampling lands on the encoder's resolution.
    """
    b = _Builder()
    dims = spec.channel_dims
    inputs = keras.Input(shape=(None, None, 3), name="preprocessed_inputs")
    x = b.conv_block(inputs, "downsample_input/conv_block", 7, dims[0], stride=2)
    x = b.residual_block(x, "downsample_input/residual_block", dims[1], stride=2, skip_conv=True)
    outputs = []
    for i in range(spec.num_hourglasses):
        hg = b.encoder_decoder(x, f"hourglass_network/{i}", spec.num_stages, dims[1:], spec.blocks_per_stage)
        out = b.conv_block(hg, f"output_conv/{i}", 3, dims[1])
        outputs.append(out)
        if i < spec.num_hourglasses - 1:
            a = b.conv_block(x, f"intermediate_conv1/{i}", 1, dims[1], relu=False)
            c = b.conv_block(out, f"intermediate_conv2/{i}", 1, dims[1], relu=False)
            merged = keras.layers.Add(name=f"intermediate_add.{i}")([a, c])
            merged = keras.layers.ReLU(name=f"intermediate_relu.{i}")(merged)
            x = b.residual_block(merged, f"intermediate_residual/{i}", dims[1])
    return keras.Model(inputs, outputs, name=name)


class HourglassBackbone:
    """CenterNet Hourglass feature extractor: config preprocessing + stacked hourglass network."""

    stride = 4

    def __init__(self, spec: HourglassSpec = HOURGLASS_104, channel_means: Sequence[float] = (0.0, 0.0, 0.0),
                 channel_stds: Sequence[float] = (1.0, 1.0, 1.0), bgr_ordering: bool = False,
                 name: str = "hourglass_104") -> None:
        self.spec = spec
        self.channel_means = tuple(float(v) for v in channel_means)
        self.channel_stds = tuple(float(v) for v in channel_stds)
        self.bgr_ordering = bool(bgr_ordering)
        self.name = name

    @property
    def num_feature_outputs(self) -> int:
        """How many feature maps ``build()``'s model returns (one per hourglass stack)."""
        return self.spec.num_hourglasses

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 4 * 2 ** self.spec.num_stages

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Resized RGB 0..255 -> (optionally BGR-reordered) ``(x - channel_means) / channel_stds``."""
        return channel_normalize(images, self.channel_means, self.channel_stds, self.bgr_ordering)

    def build(self) -> keras.Model:
        """A fresh stacked-hourglass model returning ``num_hourglasses`` feature maps."""
        return build_hourglass(self.spec, name=self.name)

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """``_network/<attribute path>/<variable>`` -> variable, for every variable of ``model``."""
        mapping: dict[str, keras.Variable] = {}
        for layer in model.layers:
            if not layer.weights:
                continue
            mapping.update(layer_items(f"{_PREFIX}/{layer.name.replace('.', '/')}", layer))
        return mapping


@register_feature_extractor(*HOURGLASS_SPECS, meta="center_net")
def create(config: Message) -> HourglassBackbone:
    """``hourglass_{10,20,32,52,104}`` from its ``feature_extractor`` message."""
    opts = feature_extractor_options(config)
    kind = opts["type"]
    return HourglassBackbone(HOURGLASS_SPECS[kind], opts["channel_means"], opts["channel_stds"], opts["bgr_ordering"],
                             name=kind)
