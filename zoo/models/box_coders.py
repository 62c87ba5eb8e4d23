"""Box coders of the zoo's SSD configs.

:class:`FasterRcnnBoxCoder` is the ``faster_rcnn_box_coder`` of the TF2 Object Detection API: a box
is encoded relative to its anchor as ``[ty, tx, th, tw]`` = ``[dy / ha * y_scale, dx / wa * x_scale,
log(h / ha) * height_scale, log(w / wa) * width_scale]``. Boxes and anchors are ``[ymin, xmin, ymax,
xmax]``. The arithmetic follows the original operation by operation (float32), so decoded boxes
agree with its exported models to float rounding.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from ..errors import ConfigError

__all__ = ["FasterRcnnBoxCoder", "box_coder_from_config", "center_size"]

_EPSILON = 1e-8


def center_size(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """``[..., 4]`` corner boxes -> ``(ycenter, xcenter, height, width)``, each ``[...]``."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    height = ymax - ymin
    width = xmax - xmin
    return ymin + height / 2.0, xmin + width / 2.0, height, width


class FasterRcnnBoxCoder:
    """``faster_rcnn_box_coder``: anchor-relative centre offsets and log size ratios, scaled."""

    code_size = 4

    def __init__(self, scale_factors: Sequence[float] | None = (10.0, 10.0, 5.0, 5.0)) -> None:
        if scale_factors is not None:
            if len(scale_factors) != 4:
                raise ConfigError(f"faster_rcnn_box_coder needs 4 scale factors, got {list(scale_factors)}")
            if any(float(s) <= 0 for s in scale_factors):
                raise ConfigError(f"faster_rcnn_box_coder scale factors must be positive, got {list(scale_factors)}")
            scale_factors = tuple(float(s) for s in scale_factors)
        self.scale_factors = scale_factors

    def encode(self, boxes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
        """Corner boxes ``[..., 4]`` and anchors of the same shape -> codes ``[..., 4]``."""
        yc_a, xc_a, ha, wa = center_size(tf.convert_to_tensor(anchors, tf.float32))
        yc, xc, h, w = center_size(tf.convert_to_tensor(boxes, tf.float32))
        ha += _EPSILON
        wa += _EPSILON
        h += _EPSILON
        w += _EPSILON
        tx = (xc - xc_a) / wa
        ty = (yc - yc_a) / ha
        tw = tf.math.log(w / wa)
        th = tf.math.log(h / ha)
        if self.scale_factors:
            ty *= self.scale_factors[0]
            tx *= self.scale_factors[1]
            th *= self.scale_factors[2]
            tw *= self.scale_factors[3]
        return tf.stack([ty, tx, th, tw], axis=-1)

    def decode(self, codes: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
        """Codes ``[..., 4]`` and anchors broadcastable to them -> corner boxes ``[..., 4]``."""
        codes = tf.convert_to_tensor(codes, tf.float32)
        yc_a, xc_a, ha, wa = center_size(tf.convert_to_tensor(anchors, tf.float32))
        ty, tx, th, tw = tf.unstack(codes, axis=-1)
        if self.scale_factors:
            ty /= self.scale_factors[0]
            tx /= self.scale_factors[1]
            th /= self.scale_factors[2]
            tw /= self.scale_factors[3]
        w = tf.exp(tw) * wa
        h = tf.exp(th) * ha
        yc = ty * ha + yc_a
        xc = tx * wa + xc_a
        return tf.stack([yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0], axis=-1)


def box_coder_from_config(box_coder: Any) -> FasterRcnnBoxCoder:
    """Build from the ``box_coder`` message of an ``ssd`` config."""
    kind, msg = box_coder.oneof()
    if kind != "faster_rcnn_box_coder":
        raise ConfigError(f"box_coder {kind!r} is not supported (faster_rcnn_box_coder is)")
    return FasterRcnnBoxCoder(
        (
            float(msg.get("y_scale", 10.0)),
            float(msg.get("x_scale", 10.0)),
            float(msg.get("height_scale", 5.0)),
            float(msg.get("width_scale", 5.0)),
        )
    )
