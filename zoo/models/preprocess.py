"""Image resizers of the zoo configs, computed as the TF2 Object Detection API computes them.

Both resizers use TF1-style bilinear resizing (``align_corners=False``, ``half_pixel_centers=False``),
which is what the original's ``resize_images`` call does, and work on float32 images of dynamic size
inside a graph. ``keep_aspect_ratio`` computes the new size with float32 arithmetic and round-half-
to-even, then zero-pads bottom/right to ``max_dimension`` when ``pad_to_max_dimension`` is set.
Resizer options odzoo does not implement (another ``resize_method``, ``convert_to_grayscale``,
``per_channel_pad_value``) are refused with a :class:`~zoo.errors.ConfigError` naming the field.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import tensorflow as tf

from ..errors import ConfigError
from .fields import floats

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message
    from ..registry import InputSpec

__all__ = ["Resizer", "resize_batch", "resize_image", "resizer_from_config"]


@dataclasses.dataclass(frozen=True)
class Resizer:
    """One image resizer: ``keep_aspect_ratio`` (min/max dimension, optional pad) or ``fixed_shape``."""

    kind: str
    min_dimension: int = 0
    max_dimension: int = 0
    pad_to_max_dimension: bool = False
    height: int = 0
    width: int = 0

    @property
    def padded_shape(self) -> tuple[int, int] | None:
        """The static output size when every image ends up the same size, else None."""
        if self.kind == "fixed_shape":
            return (self.height, self.width)
        if self.pad_to_max_dimension:
            return (self.max_dimension, self.max_dimension)
        return None


def resizer_from_config(image_resizer: Message | InputSpec) -> Resizer:
    """Build from the ``image_resizer`` message of a pipeline.config (or a registry InputSpec)."""
    if hasattr(image_resizer, "resizer"):  # registry InputSpec
        spec = image_resizer
        if spec.resizer == "fixed_shape":
            return Resizer("fixed_shape", height=int(spec.height), width=int(spec.width))
        return Resizer(
            "keep_aspect_ratio",
            min_dimension=int(spec.min_dimension),
            max_dimension=int(spec.max_dimension),
            pad_to_max_dimension=bool(spec.pad_to_max_dimension),
        )
    kind, msg = image_resizer.oneof()
    if kind == "keep_aspect_ratio_resizer":
        _check_options(kind, msg)
        return Resizer(
            "keep_aspect_ratio",
            min_dimension=int(msg.get("min_dimension", 600)),
            max_dimension=int(msg.get("max_dimension", 1024)),
            pad_to_max_dimension=bool(msg.get("pad_to_max_dimension", False)),
        )
    if kind == "fixed_shape_resizer":
        _check_options(kind, msg)
        return Resizer("fixed_shape", height=int(msg.get("height", 300)), width=int(msg.get("width", 300)))
    raise ConfigError(f"image_resizer {kind!r} is not supported (keep_aspect_ratio_resizer, fixed_shape_resizer are)")


def _check_options(kind: str, msg: Message) -> None:
    """Refuse what the resizers here do not implement, naming the field."""
    method = str(msg.get("resize_method", "BILINEAR"))
    if method != "BILINEAR":
        raise ConfigError(f"image_resizer resize_method {method} is not supported (only BILINEAR)")
    if bool(msg.get("convert_to_grayscale", False)):
        raise ConfigError(f"image_resizer.{kind}.convert_to_grayscale is not supported; remove it from the config")
    pad_values = floats(msg, "per_channel_pad_value")
    if any(v != 0.0 for v in pad_values):
        raise ConfigError(
            f"image_resizer.{kind}.per_channel_pad_value {pad_values} is not supported (padding is zero); "
            "remove it from the config"
        )


def _new_size(resizer: Resizer, height: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    if resizer.kind == "fixed_shape":
        return tf.constant([resizer.height, resizer.width], tf.int32)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    min_dim = tf.constant(float(resizer.min_dimension), tf.float32)
    large = min_dim / tf.minimum(h, w)
    large_size = tf.stack([tf.cast(tf.round(h * large), tf.int32), tf.cast(tf.round(w * large), tf.int32)])
    if not resizer.max_dimension:
        return large_size
    max_dim = tf.constant(float(resizer.max_dimension), tf.float32)
    small = max_dim / tf.maximum(h, w)
    small_size = tf.stack([tf.cast(tf.round(h * small), tf.int32), tf.cast(tf.round(w * small), tf.int32)])
    too_large = tf.cast(tf.reduce_max(large_size), tf.float32) > max_dim
    return tf.where(too_large, small_size, large_size)


def resize_image(resizer: Resizer, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize one float32 ``[H, W, 3]`` image. Returns ``(resized (padded) image, true shape [3] int32)``."""
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    size = _new_size(resizer, shape[0], shape[1])
    resized = tf.compat.v1.image.resize_bilinear(image[tf.newaxis], size, align_corners=False, half_pixel_centers=False)[0]
    true_shape = tf.stack([size[0], size[1], shape[2]])
    if resizer.kind == "keep_aspect_ratio" and resizer.pad_to_max_dimension:
        resized = tf.image.pad_to_bounding_box(resized, 0, 0, resizer.max_dimension, resizer.max_dimension)
    return resized, true_shape


def resize_batch(resizer: Resizer, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Resize a ``[B, H, W, 3]`` batch: ``(resized [B, H', W', 3] float32, true shapes [B, 3] int32)``.

    The images of one tensor share their size, so one resize op serves the whole batch; the op treats
    each image on its own, so the values are those of :func:`resize_image` image by image.
    """
    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    size = _new_size(resizer, shape[1], shape[2])
    resized = tf.compat.v1.image.resize_bilinear(images, size, align_corners=False, half_pixel_centers=False)
    if resizer.kind == "keep_aspect_ratio" and resizer.pad_to_max_dimension:
        resized = tf.image.pad_to_bounding_box(resized, 0, 0, resizer.max_dimension, resizer.max_dimension)
    out_shape = resizer.padded_shape
    if out_shape:
        resized.set_shape([images.shape[0], out_shape[0], out_shape[1], images.shape[-1]])
    true_shape = tf.stack([size[0], size[1], shape[3]])
    return resized, tf.tile(true_shape[tf.newaxis], [shape[0], 1])
