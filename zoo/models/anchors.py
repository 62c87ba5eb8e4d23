"""Anchor generators of the zoo's SSD configs, computed as the TF2 Object Detection API computes them.

* :class:`MultiscaleGridAnchors` - ``multiscale_anchor_generator`` (RetinaNet / FPN / EfficientDet):
  per pyramid level ``l`` a grid of stride ``2**l`` with ``scales_per_octave`` scales times
  ``aspect_ratios`` anchors of base size ``anchor_scale * 2**l`` pixels, normalized by the image size.
  Quirk kept from the original: the half-stride centre offset is applied only along a dimension that
  the level's stride divides (``320 % 128 != 0``, so level 7 of a 320x320 model has offset 0).
* :class:`GridAnchors` - ``grid_anchor_generator`` (the Faster R-CNN first stage): one grid of
  anchors in absolute pixels.
* :class:`SsdAnchors` - ``ssd_anchor_generator`` (the original SSD's ``create_ssd_anchors`` over a
  multiple-grid generator): per layer, scales linearly spaced between ``min_scale`` and ``max_scale``,
  normalized coordinates from the start.

Anchors are ``[N, 4]`` float32 ``[ymin, xmin, ymax, xmax]``, ordered level by level, then row, column,
and anchor within a location (aspect-ratio major, scale minor for the multiscale generator), which is
the order of the box predictor's outputs. Config floats are rounded to float32 first, as protobuf
stores them. A config the original would turn into a different set of anchors than written (no
aspect ratios, per-layer lists of the wrong length) is refused with a :class:`~zoo.errors.ConfigError`
naming the field.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ..errors import ConfigError
from .fields import f32, floats

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = [
    "AnchorGenerator",
    "GridAnchors",
    "MultiscaleGridAnchors",
    "SsdAnchors",
    "anchor_generator_from_config",
    "grid_anchor_generator_from_config",
    "tile_anchors",
]


def _required_floats(msg: Message, generator: str, field: str) -> list[float]:
    """A repeated float field that must list at least one value (float32-rounded)."""
    values = [f32(v) for v in floats(msg, field)]
    if not values:
        raise ConfigError(f"{generator}.{field} is empty; list at least one value")
    return values


def tile_anchors(
    grid_height: Any,
    grid_width: Any,
    scales: Sequence[float] | tf.Tensor,
    aspect_ratios: Sequence[float] | tf.Tensor,
    base_anchor_size: Sequence[Any],
    anchor_stride: Sequence[Any],
    anchor_offset: Sequence[Any],
) -> tf.Tensor:
    """One grid of anchors ``[grid_height * grid_width * A, 4]`` (A = len(scales) = len(aspect_ratios)).

    Anchor ``a`` at row ``i``, column ``j`` is centred at ``(i * stride_y + offset_y, j * stride_x +
    offset_x)`` with height ``scale_a / sqrt(ratio_a) * base_h`` and width ``scale_a * sqrt(ratio_a) * base_w``.
    """
    scales = tf.cast(tf.convert_to_tensor(scales), tf.float32)
    ratios = tf.cast(tf.convert_to_tensor(aspect_ratios), tf.float32)
    base_h = tf.cast(base_anchor_size[0], tf.float32)
    base_w = tf.cast(base_anchor_size[1], tf.float32)
    ratio_sqrts = tf.sqrt(ratios)
    heights = scales / ratio_sqrts * base_h
    widths = scales * ratio_sqrts * base_w
    y_centers = tf.cast(tf.range(grid_height), tf.float32) * tf.cast(anchor_stride[0], tf.float32) + tf.cast(
        anchor_offset[0], tf.float32
    )
    x_centers = tf.cast(tf.range(grid_width), tf.float32) * tf.cast(anchor_stride[1], tf.float32) + tf.cast(
        anchor_offset[1], tf.float32
    )
    num = tf.shape(scales)[0]
    gh = tf.shape(y_centers)[0]
    gw = tf.shape(x_centers)[0]
    yc = tf.broadcast_to(y_centers[:, None, None], tf.stack([gh, gw, num]))
    xc = tf.broadcast_to(x_centers[None, :, None], tf.stack([gh, gw, num]))
    hh = tf.broadcast_to(heights[None, None, :], tf.stack([gh, gw, num]))
    ww = tf.broadcast_to(widths[None, None, :], tf.stack([gh, gw, num]))
    centers = tf.reshape(tf.stack([yc, xc], axis=3), [-1, 2])
    sizes = tf.reshape(tf.stack([hh, ww], axis=3), [-1, 2])
    return tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1)


class MultiscaleGridAnchors:
    """``multiscale_anchor_generator``: one anchor grid per pyramid level ``min_level..max_level``."""

    def __init__(
        self,
        min_level: int = 3,
        max_level: int = 7,
        anchor_scale: float = 4.0,
        aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5),
        scales_per_octave: int = 2,
        normalize_coordinates: bool = True,
    ) -> None:
        if min_level > max_level:
            raise ConfigError(f"multiscale_anchor_generator min_level {min_level} exceeds max_level {max_level}")
        if scales_per_octave < 1 or not aspect_ratios:
            raise ConfigError("multiscale_anchor_generator needs scales_per_octave >= 1 and at least one aspect ratio")
        self.min_level = int(min_level)
        self.max_level = int(max_level)
        self.anchor_scale = float(anchor_scale)
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self.scales_per_octave = int(scales_per_octave)
        self.normalize_coordinates = bool(normalize_coordinates)
        self.scales = [2 ** (float(s) / self.scales_per_octave) for s in range(self.scales_per_octave)]

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per grid cell, one entry per level."""
        return [len(self.aspect_ratios) * self.scales_per_octave] * self.num_levels

    def generate(self, feature_map_shapes: Sequence[tuple[Any, Any]], im_height: Any, im_width: Any) -> tf.Tensor:
        """Anchors ``[N, 4]`` for feature maps of the given ``(height, width)``, image size in pixels.

        ``im_height`` / ``im_width`` are Python ints when the image size is static (the centre
        offset then depends on divisibility, as in the original) or tensors (offset always half a stride).
        """
        if len(feature_map_shapes) != self.num_levels:
            raise ConfigError(
                f"multiscale anchors expect {self.num_levels} feature maps (levels {self.min_level}-{self.max_level}), "
                f"got {len(feature_map_shapes)}"
            )
        # Scales and aspect ratios tiled aspect-major, scale-minor (the original's meshgrid order).
        scales = [s for _ in self.aspect_ratios for s in self.scales]
        ratios = [a for a in self.aspect_ratios for _ in self.scales]
        static = isinstance(im_height, int) and isinstance(im_width, int)
        grids = []
        for (feat_h, feat_w), level in zip(feature_map_shapes, range(self.min_level, self.max_level + 1)):
            stride = 2**level
            offset = [stride / 2.0, stride / 2.0]
            if static:
                offset[0] = stride / 2.0 if (im_height % stride == 0 or im_height == 1) else 0.0
                offset[1] = stride / 2.0 if (im_width % stride == 0 or im_width == 1) else 0.0
            base = stride * self.anchor_scale
            grid = tile_anchors(feat_h, feat_w, scales, ratios, [base, base], [stride, stride], offset)
            if self.normalize_coordinates:
                if static and (im_height == 1 or im_width == 1):
                    raise ConfigError("normalized multiscale anchors need the image size")
                h = tf.cast(im_height, tf.float32)
                w = tf.cast(im_width, tf.float32)
                grid = grid * tf.stack([1.0 / h, 1.0 / w, 1.0 / h, 1.0 / w])
            grids.append(grid)
        return tf.concat(grids, axis=0)


class SsdAnchors:
    """``ssd_anchor_generator``: the original SSD's per-layer box specs on normalized grids."""

    def __init__(
        self,
        num_layers: int = 6,
        min_scale: float = 0.2,
        max_scale: float = 0.95,
        scales: Sequence[float] | None = None,
        aspect_ratios: Sequence[float] = (1.0, 2.0, 3.0, 1.0 / 2, 1.0 / 3),
        interpolated_scale_aspect_ratio: float = 1.0,
        base_anchor_size: Sequence[float] = (1.0, 1.0),
        anchor_strides: Sequence[tuple[float, float]] | None = None,
        anchor_offsets: Sequence[tuple[float, float]] | None = None,
        reduce_boxes_in_lowest_layer: bool = True,
    ) -> None:
        if num_layers < 1:
            raise ConfigError(f"ssd_anchor_generator num_layers must be >= 1, got {num_layers}")
        if scales:
            all_scales = [float(s) for s in scales] + [1.0]
        elif num_layers == 1:
            all_scales = [float(min_scale), 1.0]
        else:
            all_scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)] + [1.0]
        self.box_specs: list[list[tuple[float, float]]] = []
        for layer, scale, scale_next in zip(range(num_layers), all_scales[:-1], all_scales[1:]):
            if layer == 0 and reduce_boxes_in_lowest_layer:
                specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
            else:
                specs = [(scale, float(a)) for a in aspect_ratios]
                if interpolated_scale_aspect_ratio > 0.0:
                    specs.append((float(np.sqrt(scale * scale_next)), float(interpolated_scale_aspect_ratio)))
            self.box_specs.append(specs)
        self.base_anchor_size = [float(base_anchor_size[0]), float(base_anchor_size[1])]
        self.anchor_strides = list(anchor_strides) if anchor_strides else None
        self.anchor_offsets = list(anchor_offsets) if anchor_offsets else None

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per grid cell, one entry per layer."""
        return [len(specs) for specs in self.box_specs]

    def generate(self, feature_map_shapes: Sequence[tuple[Any, Any]], im_height: Any, im_width: Any) -> tf.Tensor:
        """Anchors ``[N, 4]`` (normalized) for feature maps of the given ``(height, width)``."""
        if len(feature_map_shapes) != len(self.box_specs):
            raise ConfigError(
                f"ssd anchors expect {len(self.box_specs)} feature maps, got {len(feature_map_shapes)}"
            )
        h = tf.cast(im_height, tf.float32)
        w = tf.cast(im_width, tf.float32)
        if self.anchor_strides:
            strides = [(tf.cast(s[0], tf.float32) / h, tf.cast(s[1], tf.float32) / w) for s in self.anchor_strides]
        else:
            strides = [
                (1.0 / tf.cast(gh, tf.float32), 1.0 / tf.cast(gw, tf.float32)) for gh, gw in feature_map_shapes
            ]
        if self.anchor_offsets:
            offsets = [(tf.cast(o[0], tf.float32) / h, tf.cast(o[1], tf.float32) / w) for o in self.anchor_offsets]
        else:
            offsets = [(0.5 * sy, 0.5 * sx) for sy, sx in strides]
        min_side = tf.minimum(h, w)
        base = [
            min_side / h * tf.constant(self.base_anchor_size[0], tf.float32),
            min_side / w * tf.constant(self.base_anchor_size[1], tf.float32),
        ]
        grids = []
        for (gh, gw), specs, stride, offset in zip(feature_map_shapes, self.box_specs, strides, offsets):
            scales = [s for s, _ in specs]
            ratios = [a for _, a in specs]
            grids.append(tile_anchors(gh, gw, scales, ratios, base, stride, offset))
        return tf.concat(grids, axis=0)


class GridAnchors:
    """``grid_anchor_generator``: one anchor set per feature-map cell, in absolute pixels.

    Anchor ``(ratio_i, scale_j)`` at row ``r``, column ``c`` is centred at ``(r * stride_y + offset_y,
    c * stride_x + offset_x)`` with size ``scale / sqrt(ratio) * base_h`` by ``scale * sqrt(ratio) *
    base_w``; within a cell anchors run aspect-ratio major, scale minor (the original's meshgrid order).
    """

    def __init__(
        self,
        scales: Sequence[float] = (0.5, 1.0, 2.0),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        base_anchor_size: Sequence[float] = (256.0, 256.0),
        anchor_stride: Sequence[float] = (16.0, 16.0),
        anchor_offset: Sequence[float] = (0.0, 0.0),
    ) -> None:
        if not scales or not aspect_ratios:
            raise ConfigError("grid_anchor_generator needs at least one scale and one aspect ratio")
        if any(a <= 0 for a in aspect_ratios) or any(s <= 0 for s in scales):
            raise ConfigError(f"grid_anchor_generator scales {list(scales)} and aspect_ratios "
                              f"{list(aspect_ratios)} must be positive")
        self.scales = [float(s) for s in scales]
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self.base_anchor_size = [float(v) for v in base_anchor_size]
        self.anchor_stride = [float(v) for v in anchor_stride]
        self.anchor_offset = [float(v) for v in anchor_offset]

    def num_anchors_per_location(self) -> int:
        return len(self.scales) * len(self.aspect_ratios)

    def generate(self, grid_height: Any, grid_width: Any) -> tf.Tensor:
        """Anchors ``[grid_height * grid_width * A, 4]`` (ymin, xmin, ymax, xmax in pixels)."""
        scales = [s for _ in self.aspect_ratios for s in self.scales]
        ratios = [a for a in self.aspect_ratios for _ in self.scales]
        return tile_anchors(grid_height, grid_width, scales, ratios, self.base_anchor_size, self.anchor_stride,
                            self.anchor_offset)


AnchorGenerator = MultiscaleGridAnchors | SsdAnchors
"""The anchor generators of SSD configs (normalized anchors over several feature maps)."""


def grid_anchor_generator_from_config(anchor_generator: Message) -> GridAnchors:
    """Build from a ``first_stage_anchor_generator`` message (Faster R-CNN)."""
    kind, msg = anchor_generator.oneof()
    if kind != "grid_anchor_generator":
        raise ConfigError(f"first_stage_anchor_generator {kind!r} is not supported (grid_anchor_generator is)")
    return GridAnchors(
        scales=_required_floats(msg, kind, "scales"),
        aspect_ratios=_required_floats(msg, kind, "aspect_ratios"),
        base_anchor_size=(int(msg.get("height", 256)), int(msg.get("width", 256))),
        anchor_stride=(int(msg.get("height_stride", 16)), int(msg.get("width_stride", 16))),
        anchor_offset=(int(msg.get("height_offset", 0)), int(msg.get("width_offset", 0))),
    )


def _per_layer_pairs(msg: Message, first: str, second: str, num_layers: int) -> list[tuple[float, float]] | None:
    """``zip`` of two repeated fields that give one value per layer (None when both are absent)."""
    a, b = floats(msg, first), floats(msg, second)
    if not a and not b:
        return None
    if len(a) != len(b) or len(a) != num_layers:
        raise ConfigError(
            f"ssd_anchor_generator.{first} and .{second} need one value per layer: num_layers is {num_layers}, "
            f"got {len(a)} and {len(b)} values"
        )
    return list(zip(a, b))


def anchor_generator_from_config(anchor_generator: Message) -> AnchorGenerator:
    """Build from the ``anchor_generator`` message of an ``ssd`` config."""
    kind, msg = anchor_generator.oneof()
    if kind == "multiscale_anchor_generator":
        return MultiscaleGridAnchors(
            min_level=int(msg.get("min_level", 3)),
            max_level=int(msg.get("max_level", 7)),
            anchor_scale=f32(msg.get("anchor_scale", 4.0)),
            aspect_ratios=_required_floats(msg, kind, "aspect_ratios"),
            scales_per_octave=int(msg.get("scales_per_octave", 2)),
            normalize_coordinates=bool(msg.get("normalize_coordinates", True)),
        )
    if kind == "ssd_anchor_generator":
        num_layers = int(msg.get("num_layers", 6))
        scales = [f32(s) for s in floats(msg, "scales")]
        if scales and len(scales) != num_layers:
            raise ConfigError(
                f"ssd_anchor_generator.scales needs one value per layer: num_layers is {num_layers}, "
                f"got {len(scales)} values"
            )
        return SsdAnchors(
            num_layers=num_layers,
            min_scale=f32(msg.get("min_scale", 0.2)),
            max_scale=f32(msg.get("max_scale", 0.95)),
            scales=scales,
            aspect_ratios=_required_floats(msg, kind, "aspect_ratios"),
            interpolated_scale_aspect_ratio=f32(msg.get("interpolated_scale_aspect_ratio", 1.0)),
            base_anchor_size=(f32(msg.get("base_anchor_height", 1.0)), f32(msg.get("base_anchor_width", 1.0))),
            anchor_strides=_per_layer_pairs(msg, "height_stride", "width_stride", num_layers),
            anchor_offsets=_per_layer_pairs(msg, "height_offset", "width_offset", num_layers),
            reduce_boxes_in_lowest_layer=bool(msg.get("reduce_boxes_in_lowest_layer", True)),
        )
    raise ConfigError(
        f"anchor_generator {kind!r} is not supported (multiscale_anchor_generator, ssd_anchor_generator are)"
    )
