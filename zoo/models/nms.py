"""Per-class non-max suppression exactly as the TF2 OD API's ``batch_multiclass_non_max_suppression``.

The default (dynamic-shape, hard-NMS) path of the original, step by step for each image:

1. for every class: ``tf.image.non_max_suppression_with_scores`` over all boxes (score strictly above
   ``score_thresh``, IoU threshold ``iou_thresh``, at most ``max_size_per_class``); the selection is
   padded to ``min(max_size_per_class, num_boxes)`` entries with box index 0 and score -1;
2. all classes concatenated (class 0 first) and sorted by score, descending (``top_k``: ties keep the
   lower position first);
3. boxes clipped to ``clip_window``; boxes left with zero area are dropped; the survivors re-sorted,
   and, if ``change_coordinate_frame``, expressed relative to the window;
4. the first ``max_total_size`` valid entries kept, then zero-padded to ``max_total_size``.

Additional per-box fields (e.g. multiclass scores, anchor indices) follow their boxes.
:func:`batch_class_specific_nms` is the same for boxes refined per class (Faster R-CNN's second stage).

Candidate pruning (same result, far less work): step 1 runs one NMS per class over every box
(90 classes x ~13k anchors for an SSD), yet only the ``max_total_size`` best survivors are kept.
Greedy NMS decides each candidate from the higher-ranked ones alone (rank: score descending, then box
index), so NMS over the pairs scoring strictly above a cutoff ``t`` selects exactly the full run's
selections among them, in the same order; every other selection scores at most ``t``. When
``max_total_size`` detections survive step 3 this way, they are the full run's output, in the same
order (ties included). :func:`multiclass_nms` picks ``t`` so that 10 times ``max_total_size`` boxes
have a class above it, and falls back to all candidates when that does not settle it (fewer
detections than ``max_total_size`` in the image). Each further attempt would add its own graph
copy (trace and first-call time), so there is one.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import tensorflow as tf

from ..errors import ConfigError
from .fields import f32

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = [
    "NmsConfig",
    "batch_class_specific_nms",
    "batch_multiclass_nms",
    "multiclass_nms",
    "nms_config_from_config",
]


class NmsConfig:
    """The ``batch_non_max_suppression`` parameters of a pipeline.config."""

    def __init__(
        self,
        score_thresh: float = 0.0,
        iou_thresh: float = 0.6,
        max_size_per_class: int = 100,
        max_total_size: int = 100,
        change_coordinate_frame: bool = True,
    ) -> None:
        if not 0.0 <= iou_thresh <= 1.0:
            raise ConfigError(f"iou_threshold must be between 0 and 1, got {iou_thresh}")
        if max_size_per_class < 1 or max_total_size < 1:
            raise ConfigError(
                f"max_detections_per_class ({max_size_per_class}) and max_total_detections ({max_total_size}) "
                "must be positive"
            )
        self.score_thresh = float(score_thresh)
        self.iou_thresh = float(iou_thresh)
        self.max_size_per_class = int(max_size_per_class)
        self.max_total_size = int(max_total_size)
        self.change_coordinate_frame = bool(change_coordinate_frame)

    def __repr__(self) -> str:
        return (
            f"NmsConfig(score_thresh={self.score_thresh}, iou_thresh={self.iou_thresh}, "
            f"max_size_per_class={self.max_size_per_class}, max_total_size={self.max_total_size}, "
            f"change_coordinate_frame={self.change_coordinate_frame})"
        )


def nms_config_from_config(batch_nms: Message) -> NmsConfig:
    """Read a ``batch_non_max_suppression`` message (protobuf defaults for absent fields)."""
    for unsupported in ("use_static_shapes", "use_class_agnostic_nms", "use_partitioned_nms", "use_combined_nms"):
        if bool(batch_nms.get(unsupported, False)):
            raise ConfigError(f"batch_non_max_suppression.{unsupported} is not supported; remove it from the config")
    if f32(batch_nms.get("soft_nms_sigma", 0.0)) != 0.0:
        raise ConfigError("batch_non_max_suppression.soft_nms_sigma (soft NMS) is not supported")
    return NmsConfig(
        score_thresh=f32(batch_nms.get("score_threshold", 0.0)),
        iou_thresh=f32(batch_nms.get("iou_threshold", 0.6)),
        max_size_per_class=int(batch_nms.get("max_detections_per_class", 100)),
        max_total_size=int(batch_nms.get("max_total_detections", 100)),
        change_coordinate_frame=bool(batch_nms.get("change_coordinate_frame", True)),
    )


def _gather(fields: Mapping[str, tf.Tensor], indices: tf.Tensor) -> dict[str, tf.Tensor]:
    return {k: tf.gather(v, indices) for k, v in fields.items()}


def _sort_by_score(fields: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    scores = fields["scores"]
    _, order = tf.math.top_k(scores, k=tf.shape(scores)[0], sorted=True)
    return _gather(fields, order)


#: boxes tried before all candidates, as a multiple of ``max_total_size``
CANDIDATE_FACTOR = 10


def multiclass_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    config: NmsConfig,
    clip_window: tf.Tensor | None = None,
    additional_fields: Mapping[str, tf.Tensor] | None = None,
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """NMS for one image. ``boxes`` ``[N, 4]`` (shared by all classes), ``scores`` ``[N, C]``.

    Returns ``(fields, num_valid)``: ``fields`` holds ``boxes`` ``[M, 4]``, ``scores`` ``[M]``,
    ``classes`` ``[M]`` (float, 0-based) and each additional field, for the ``M = num_valid`` kept boxes.
    Runs on the best candidates first (see the module docstring); the result is the all-candidates one.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if scores.shape[1] is None:
        raise ValueError("scores must have a static number of classes")
    additional_fields = dict(additional_fields or {})
    keys = sorted(additional_fields)

    def pack(fields: dict[str, tf.Tensor], num: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return (fields["boxes"], fields["scores"], fields["classes"], *[fields[k] for k in keys], num)

    def all_candidates() -> tuple[tf.Tensor, ...]:
        return pack(*_multiclass_nms_all(boxes, scores, config, clip_window, additional_fields))

    if not math.isfinite(config.score_thresh):
        return _unpack(all_candidates(), keys)
    box_best = tf.reduce_max(scores, axis=1)  # one value per box: the cutoff is picked among boxes
    k = tf.minimum(CANDIDATE_FACTOR * config.max_total_size, tf.size(box_best))
    cutoff = tf.reduce_min(tf.math.top_k(box_best, k=k, sorted=False).values)
    fields, num = _nms_above(boxes, scores, config, clip_window, additional_fields, cutoff)
    settled = tf.logical_or(tf.equal(num, config.max_total_size), tf.equal(k, 0))
    pruned = pack(fields, num)
    return _unpack(tf.cond(settled, lambda: pruned, all_candidates), keys)


def _unpack(out: tuple[tf.Tensor, ...], keys: list[str]) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    return {"boxes": out[0], "scores": out[1], "classes": out[2], **dict(zip(keys, out[3:-1]))}, out[-1]


def _nms_above(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    config: NmsConfig,
    clip_window: tf.Tensor | None,
    additional_fields: dict[str, tf.Tensor],
    cutoff: tf.Tensor,
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Steps 1-4 over the (box, class) pairs scoring strictly above ``cutoff`` only.

    Boxes and classes without such a pair are left out (a class without candidates adds only padding,
    which never reaches the output); the others keep their order.
    """
    chosen = scores > cutoff
    rows = tf.reshape(tf.where(tf.reduce_any(chosen, axis=1)), [-1])
    columns = tf.reshape(tf.where(tf.reduce_any(chosen, axis=0)), [-1])
    columns = tf.concat([columns, [0]], 0)[: tf.maximum(tf.size(columns), 1)]  # never empty: the class loop needs one
    chosen = tf.gather(tf.gather(chosen, rows), columns, axis=1)
    candidate_scores = tf.where(chosen, tf.gather(tf.gather(scores, rows), columns, axis=1), float("-inf"))
    return _multiclass_nms_all(
        tf.gather(boxes, rows), candidate_scores, config, clip_window, _gather(additional_fields, rows), columns
    )


def _multiclass_nms_all(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    config: NmsConfig,
    clip_window: tf.Tensor | None,
    additional_fields: dict[str, tf.Tensor],
    class_ids: tf.Tensor | None = None,
) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Steps 1-4 over every candidate; ``class_ids``: the class of each column of ``scores`` (default 0, 1, ...)."""
    if class_ids is None:
        class_ids = tf.range(scores.shape[1])
    num_boxes = tf.shape(boxes)[0]
    max_selection = tf.minimum(config.max_size_per_class, num_boxes)

    def one_class(class_scores: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        selected, selected_scores = tf.image.non_max_suppression_with_scores(
            boxes,
            class_scores,
            max_selection,
            iou_threshold=config.iou_thresh,
            score_threshold=config.score_thresh,
            soft_nms_sigma=0.0,
        )
        num_valid = tf.shape(selected)[0]
        pad = max_selection - num_valid
        selected = tf.concat([selected, tf.zeros([pad], tf.int32)], 0)
        valid = tf.range(max_selection) < num_valid
        selected_scores = tf.concat([selected_scores, tf.zeros([pad], tf.float32)], 0)
        return selected, tf.where(valid, selected_scores, -tf.ones([max_selection]))

    # One loop over the classes (not one graph copy per class); rows stay in class order.
    selected, selected_scores = tf.map_fn(
        one_class,
        tf.transpose(scores),
        fn_output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)),
    )
    flat = tf.reshape(selected, [-1])
    merged = {"boxes": tf.gather(boxes, flat)}
    merged.update(_gather(additional_fields, flat))
    merged["scores"] = tf.reshape(selected_scores, [-1])
    merged["classes"] = tf.reshape(
        tf.tile(tf.cast(class_ids, tf.float32)[:, tf.newaxis], [1, max_selection]), [-1]
    )
    merged = _sort_by_score(merged)
    if clip_window is not None:
        merged = _clip_and_prune(merged, tf.convert_to_tensor(clip_window, tf.float32), config.change_coordinate_frame)
    num_valid_total = tf.reduce_sum(tf.cast(merged["scores"] >= 0, tf.int32))
    total = tf.minimum(config.max_total_size, tf.shape(merged["scores"])[0])
    merged = _gather(merged, tf.range(total))
    num_valid_total = tf.minimum(num_valid_total, total)
    merged = _gather(merged, tf.range(num_valid_total))
    return merged, num_valid_total


def _area(boxes: tf.Tensor) -> tf.Tensor:
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return (ymax - ymin) * (xmax - xmin)


def _clip_and_prune(fields: dict[str, tf.Tensor], window: tf.Tensor, change_frame: bool) -> dict[str, tf.Tensor]:
    """Clip to the window, drop zero-area boxes, re-sort; optionally re-express relative to the window."""
    ymin, xmin, ymax, xmax = tf.unstack(fields["boxes"], axis=1)
    wy0, wx0, wy1, wx1 = tf.unstack(window)
    clipped = tf.stack(
        [
            tf.maximum(tf.minimum(ymin, wy1), wy0),
            tf.maximum(tf.minimum(xmin, wx1), wx0),
            tf.maximum(tf.minimum(ymax, wy1), wy0),
            tf.maximum(tf.minimum(xmax, wx1), wx0),
        ],
        axis=1,
    )
    fields = dict(fields, boxes=clipped)
    keep = tf.cast(tf.reshape(tf.where(_area(clipped) > 0.0), [-1]), tf.int32)
    fields = _gather(fields, keep)
    nonzero = tf.cast(_area(fields["boxes"]), tf.bool)
    fields["scores"] = tf.where(nonzero, fields["scores"], -tf.ones_like(fields["scores"]))
    fields = _sort_by_score(fields)
    if change_frame:
        height = wy1 - wy0
        width = wx1 - wx0
        shifted = fields["boxes"] - tf.stack([wy0, wx0, wy0, wx0])
        fields["boxes"] = shifted * tf.stack([1.0 / height, 1.0 / width, 1.0 / height, 1.0 / width])
    return fields


def _pad(fields: dict[str, tf.Tensor], size: int) -> dict[str, tf.Tensor]:
    out = {}
    for key, value in fields.items():
        n = tf.shape(value)[0]
        paddings = [[0, tf.maximum(size - n, 0)]] + [[0, 0]] * (len(value.shape) - 1)
        out[key] = tf.pad(value, paddings)[:size]
    return out


def batch_multiclass_nms(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    config: NmsConfig,
    clip_window: tf.Tensor | None = None,
    additional_fields: Mapping[str, tf.Tensor] | None = None,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, dict[str, tf.Tensor], tf.Tensor]:
    """Batched :func:`multiclass_nms`. ``boxes`` ``[B, N, 4]`` or ``[B, N, 1, 4]``, ``scores`` ``[B, N, C]``.

    ``clip_window``: ``[B, 4]`` or ``[4]``; when None, the extent of all boxes (as the original).
    Returns ``(boxes [B, K, 4], scores [B, K], classes [B, K], additional {name: [B, K, ...]},
    num_detections [B] int32)`` with ``K = max_total_size``, zero-padded past ``num_detections``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if len(boxes.shape) == 4:
        if boxes.shape[2] != 1:
            raise ValueError("class-specific boxes (q > 1) are not supported")
        boxes = boxes[:, :, 0, :]
    scores = tf.convert_to_tensor(scores, tf.float32)
    additional_fields = dict(additional_fields or {})
    if clip_window is None:
        clip_window = tf.stack(
            [
                tf.reduce_min(boxes[..., 0]),
                tf.reduce_min(boxes[..., 1]),
                tf.reduce_max(boxes[..., 2]),
                tf.reduce_max(boxes[..., 3]),
            ]
        )
    clip_window = tf.convert_to_tensor(clip_window, tf.float32)
    if len(clip_window.shape) == 1:
        clip_window = tf.tile(clip_window[tf.newaxis], [tf.shape(boxes)[0], 1])

    def one_image(args: tuple[tf.Tensor, ...]) -> tuple[tf.Tensor, ...]:
        image_boxes, image_scores, window = args[:3]
        extra = dict(zip(sorted(additional_fields), args[3:]))
        fields, num = multiclass_nms(image_boxes, image_scores, config, window, extra)
        fields = _pad(fields, config.max_total_size)
        return (fields["boxes"], fields["scores"], fields["classes"], *[fields[k] for k in sorted(extra)], num)

    keys = sorted(additional_fields)
    signature = (
        tf.TensorSpec([config.max_total_size, 4], tf.float32),
        tf.TensorSpec([config.max_total_size], tf.float32),
        tf.TensorSpec([config.max_total_size], tf.float32),
        *[
            tf.TensorSpec([config.max_total_size, *additional_fields[k].shape[2:]], additional_fields[k].dtype)
            for k in keys
        ],
        tf.TensorSpec([], tf.int32),
    )
    outputs = tf.map_fn(
        one_image,
        (boxes, scores, clip_window, *[additional_fields[k] for k in keys]),
        fn_output_signature=signature,
    )
    extra_out = {k: outputs[3 + i] for i, k in enumerate(keys)}
    return outputs[0], outputs[1], outputs[2], extra_out, outputs[-1]


def batch_class_specific_nms(
    boxes: tf.Tensor, scores: tf.Tensor, config: NmsConfig, clip_window: tf.Tensor, additional_fields: dict[str, tf.Tensor]
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, dict[str, tf.Tensor], tf.Tensor]:
    """Per-class NMS where every class has its own boxes (``boxes`` ``[B, N, C, 4]``, ``scores`` ``[B, N, C]``).

    As in the original, class ``c`` is suppressed among its own boxes ``boxes[:, :, c]``; the
    survivors of all classes are merged by score, clipped and cut to ``max_total_size``. Computed
    with :func:`batch_multiclass_nms` over the ``N * C`` boxes, each scoring only
    for its own class (below ``score_thresh`` for the others).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    num_classes = int(scores.shape[2])
    batch, num = tf.shape(scores)[0], tf.shape(scores)[1]
    own_class = tf.reshape(tf.eye(num_classes, dtype=tf.bool), [1, 1, num_classes, num_classes])
    spread = tf.broadcast_to(scores[:, :, tf.newaxis, :], tf.stack([batch, num, num_classes, num_classes]))
    flat_scores = tf.reshape(tf.where(own_class, spread, config.score_thresh - 1.0), [batch, -1, num_classes])
    flat_boxes = tf.reshape(boxes, [batch, -1, 1, 4])
    extra = {k: tf.repeat(v, num_classes, axis=1) for k, v in additional_fields.items()}
    return batch_multiclass_nms(flat_boxes, flat_scores, config, clip_window=clip_window, additional_fields=extra)
