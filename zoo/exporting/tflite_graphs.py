"""The detection graphs that go into a TFLite file: resized image in, the serving outputs out.

The TFLite model takes what the model's image resizer produces, as the zoo's TFLite exports take a
resized image: ``images`` float32 ``[1, S_h, S_w, 3]`` (RGB 0..255, resized and padded by the
resizer of the model's ``pipeline.config``) and ``true_shapes`` int32 ``[1, 3]`` (the resized size
before padding). Every tensor then has a static shape, which the interpreter runs fastest; the
``tflite`` backend runs the resizer before the interpreter. Models whose resized size depends on the
image (a keep-aspect resizer without padding) have no fixed input and are not exported.

Post-processing runs inside the model, as in the zoo's own TFLite exports:

* CenterNet: peak extraction (max-pool), top-k and box (and keypoint) decoding are plain tensor
  ops, so the network's own ``postprocess`` converts as it is.
* SSD family (SSD, RetinaNet, EfficientDet): box decoding plus per-class non-max suppression with
  the built-in ``NON_MAX_SUPPRESSION_V5`` op in a loop over the classes (the Keras model uses
  ``tf.map_fn``, which TFLite cannot lower). Selection, ordering, clipping to the true image and
  pruning follow :mod:`zoo.models.nms` step by step, so the detections are the Keras model's.

Families without such a graph raise :class:`~zoo.errors.UnsupportedModelError` from
:func:`check_tflite_support` before any work is done.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..errors import UnsupportedModelError

__all__ = ["TFLITE_FAMILIES", "check_tflite_architecture", "check_tflite_support", "detection_graph", "family_of", "input_size"]

#: meta-architecture -> what the TFLite graph does after the network
TFLITE_FAMILIES = {
    "center_net": "peak extraction and top-k inside the model",
    "ssd": "box decoding and per-class NMS inside the model",
}

#: SSD fast NMS: candidates per class = this x max_size_per_class
FAST_NMS_CANDIDATES_PER_DETECTION = 1
#: SSD fastest NMS: candidate (box, class) pairs of all classes together = this x max_total_size
PAIR_CANDIDATES_PER_DETECTION = 10

_REASONS = {
    "faster_rcnn": "a two-stage model (region proposals, then crop-and-resize per box) has no TFLite "
                   "detection graph (the zoo exports it as a SavedModel only)",
}


def family_of(net: Any) -> str:
    """The meta-architecture name of a network of ours (``center_net``, ``ssd``, ``faster_rcnn``)."""
    module = type(net).__module__.rsplit(".", 1)[-1]
    name = type(net).__name__.lower()
    if "centernet" in name or module == "centernet":
        return "center_net"
    if name == "ssd" or module == "ssd":
        return "ssd"
    if "rcnn" in name or "rcnn" in module:
        return "faster_rcnn"
    return name


def input_size(resizer: Any) -> tuple[int, int] | None:
    """The fixed ``(height, width)`` the resizer produces, or None when it depends on the image."""
    shape = resizer.padded_shape
    return (int(shape[0]), int(shape[1])) if shape else None


def check_tflite_architecture(meta_architecture: str | None, model_name: str) -> None:
    """The cheap check on a registry entry's meta-architecture, before the model is loaded."""
    if meta_architecture and meta_architecture not in TFLITE_FAMILIES:
        reason = _REASONS.get(meta_architecture, f"meta-architecture {meta_architecture!r} has no TFLite detection graph")
        raise UnsupportedModelError(f"{model_name} cannot be exported to TFLite: {reason}; use format saved_model")


def check_tflite_support(net: Any, model_name: str) -> None:
    """Raise :class:`UnsupportedModelError` (one line: model and reason) if ``net`` has no TFLite graph."""
    family = family_of(net)
    if family not in TFLITE_FAMILIES:
        reason = _REASONS.get(family, f"meta-architecture {family!r} has no TFLite detection graph")
    elif input_size(net.resizer) is None:
        reason = "its image resizer keeps the aspect ratio without padding, so the input size is not fixed"
    else:
        return
    raise UnsupportedModelError(f"{model_name} cannot be exported to TFLite: {reason}; use format saved_model")


def detection_graph(net: Any, *, fast_nms: bool = True) -> Callable[[Any, Any], dict[str, Any]]:
    """``(images [1, S_h, S_w, 3] float32, true_shapes [1, 3] int32) -> serving outputs`` (1-based
    float classes) for the TFLite converter. ``fast_nms`` (SSD): NMS over each class's best
    candidates with an exact fallback (see :func:`_fast_nms_or_full`); off for int8, whose
    quantizer does not take the conditional."""
    import tensorflow as tf

    body = (functools.partial(_ssd_detections, fast_nms=fast_nms) if family_of(net) == "ssd"
            else _centernet_detections)

    def serve(images: Any, true_shapes: Any) -> dict[str, Any]:
        out = body(net, tf.cast(images, tf.float32), tf.cast(true_shapes, tf.int32))
        result = {
            "detection_boxes": tf.cast(out["detection_boxes"], tf.float32),
            "detection_scores": tf.cast(out["detection_scores"], tf.float32),
            "detection_classes": tf.cast(out["detection_classes"], tf.float32) + 1.0,
            "num_detections": tf.reshape(tf.cast(out["num_detections"], tf.float32), [-1]),
        }
        for key in ("detection_keypoints", "detection_keypoint_scores"):
            if key in out:
                result[key] = tf.cast(out[key], tf.float32)
        return result

    return serve


def _centernet_detections(net: Any, resized: Any, true_shapes: Any) -> dict[str, Any]:
    """CenterNet after its resizer: backbone normalization, network, peaks and boxes.

    A box-only CenterNet (:func:`zoo.backends.centernet_sparse.supports_sparse_heads`) evaluates its
    box-size and offset heads at the ``max_detections`` peaks only, as the ``keras`` backend does:
    those heads are otherwise a 3x3 convolution to 256 channels and a 1x1 convolution over the whole
    stride-4 grid, of which ``postprocess`` reads 100 positions. Other CenterNets run whole.
    """
    from ..backends.centernet_sparse import supports_sparse_heads

    preprocessed = net.backbone.preprocess(resized)
    if not supports_sparse_heads(net):
        return dict(net.postprocess(net.predict(preprocessed), true_shapes))
    return _sparse_centernet_detections(net, preprocessed, true_shapes)


def _sparse_centernet_detections(net: Any, preprocessed: Any, true_shapes: Any) -> dict[str, Any]:
    """``postprocess``'s boxes, scores and classes, with the box heads computed at the peaks only."""
    import tensorflow as tf

    from ..backends.centernet_sparse import _head_at
    from ..models.centernet import (
        BOX_OFFSET,
        BOX_SCALE,
        OBJECT_CENTER,
        boxes_from_head_values,
        normalize_strided,
        top_k_locations,
        true_image_mask,
    )

    features = net.backbone_model(preprocessed, training=False)
    if isinstance(features, (list, tuple)):
        (features,) = features
    center_logits = net.heads[OBJECT_CENTER][0](features, training=False)
    center = tf.sigmoid(center_logits)
    center = center * true_image_mask(center, true_shapes)
    scores, ys, xs, classes = top_k_locations(center, net.config.peak_max_pool_kernel_size, net.config.max_detections)
    sizes, offsets = (_head_at(net.heads[name][0], features, ys, xs) for name in (BOX_SCALE, BOX_OFFSET))
    grid = center_logits.shape
    boxes = boxes_from_head_values(ys, xs, sizes, offsets, int(grid[1]), int(grid[2]))
    return {
        "detection_boxes": normalize_strided(boxes, net.stride, true_shapes),
        "detection_scores": scores,
        "detection_classes": classes,
        "num_detections": tf.reduce_sum(tf.cast(scores > 0, tf.int32), axis=1),
    }


# ----------------------------------------------------------------------------- SSD
def _ssd_detections(net: Any, resized: Any, true_shapes: Any, fast_nms: bool = True) -> dict[str, Any]:
    """SSD after its resizer: normalization -> network -> decode -> per-class NMS, TFLite-convertible.

    The Keras model normalizes before resizing; the normalization is affine per channel, so it
    commutes with bilinear resizing, and the padding (zero after normalization there) is zeroed here.
    """
    import tensorflow as tf

    from ..models.ssd import BOX_ENCODINGS, CLASS_PREDICTIONS, clip_window

    preprocessed = net.feature_extractor.preprocess(resized)
    if net.resizer.kind == "keep_aspect_ratio" and net.resizer.pad_to_max_dimension:
        rows = tf.range(tf.shape(resized)[1])[tf.newaxis, :, tf.newaxis, tf.newaxis]
        cols = tf.range(tf.shape(resized)[2])[tf.newaxis, tf.newaxis, :, tf.newaxis]
        inside = tf.logical_and(rows < true_shapes[:, 0, tf.newaxis, tf.newaxis, tf.newaxis],
                                cols < true_shapes[:, 1, tf.newaxis, tf.newaxis, tf.newaxis])
        preprocessed = preprocessed * tf.cast(inside, preprocessed.dtype)
    predictions = net.predict(preprocessed)
    anchors = predictions["anchors"]
    boxes = tf.reshape(net.box_coder.decode(predictions[BOX_ENCODINGS], anchors[tf.newaxis])[0], [-1, 4])
    # reshape and SLICE: the interpreter runs a strided slice (indexing) of this [anchors, classes + 1]
    # map element by element, ~10 ms, where SLICE copies rows
    width = int(predictions[CLASS_PREDICTIONS].shape[-1])
    logits = tf.reshape(predictions[CLASS_PREDICTIONS], [-1, width])
    if net.config.add_background_class or net.config.explicit_background_class:
        logits = tf.slice(logits, [0, 1], [-1, width - 1])
    window = clip_window(preprocessed, true_shapes)[0]
    config = net.config.nms

    detections = functools.partial(_detections, window=window, config=config)
    if fast_nms and boxes.shape[0] is not None:
        # an element-wise increasing score converter ranks pairs as their logits do: it then runs on
        # the candidates only (the whole [anchors, classes] map only if the fallback needs it)
        if net.config.score_converter in ("SIGMOID", "IDENTITY") and net.config.logit_scale > 0:
            out, num = _pair_nms_or_per_class(boxes, logits, config, detections, to_scores=net.convert_scores)
        else:
            out, num = _pair_nms_or_per_class(boxes, net.convert_scores(logits), config, detections)
    else:
        out, num = detections(_per_class_nms(boxes, net.convert_scores(logits), config))
    return {
        "detection_boxes": out["boxes"][tf.newaxis],
        "detection_scores": out["scores"][tf.newaxis],
        "detection_classes": out["classes"][tf.newaxis],
        "num_detections": num[tf.newaxis],
    }


def _detections(candidates: dict[str, Any], window: Any, config: Any) -> tuple[dict[str, Any], Any]:
    """NMS candidates -> clipped, pruned, sorted, the first ``max_total_size`` (zero-padded), count."""
    import tensorflow as tf

    fields = _clip_and_prune(candidates, window, config.change_coordinate_frame)
    valid = tf.reduce_sum(tf.cast(fields["scores"] >= 0, tf.int32))
    num = tf.minimum(valid, config.max_total_size)
    out = {}
    for key, value in fields.items():
        pad = [[0, config.max_total_size - num]] + [[0, 0]] * (len(value.shape) - 1)
        out[key] = tf.pad(value[:num], pad)
    return out, num


def _fast_nms_or_full(boxes: Any, scores: Any, config: Any, detections: Callable[..., Any]) -> tuple[Any, Any]:
    """The per-class NMS on each class's ``K`` best candidates, used when it provably gives the
    detections of the NMS over every box, else (rarely) the NMS over every box.

    The greedy NMS over a class's best ``K`` candidates selects exactly the first selections of the
    NMS over all its boxes. It can only miss later selections, scoring at most the ``K``-th
    candidate's score; those cannot reach the output when that score is below the last of the
    ``max_total_size`` detections (or when the class already has its ``max_size_per_class``).
    """
    import tensorflow as tf

    num_boxes = int(boxes.shape[0])
    per_class = min(config.max_size_per_class, num_boxes)
    k = min(num_boxes, FAST_NMS_CANDIDATES_PER_DETECTION * per_class)
    if k >= num_boxes:
        return detections(_per_class_nms(boxes, scores, config))
    num_classes = int(scores.shape[1])
    top_scores, top_index = tf.math.top_k(tf.transpose(scores), k=k, sorted=True)  # [C, K]
    chosen, chosen_scores, full = [], [], []
    for c in range(num_classes):
        candidates = tf.gather(boxes, top_index[c])
        selected, selected_scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=candidates, scores=top_scores[c], max_output_size=per_class,
            iou_threshold=config.iou_thresh, score_threshold=config.score_thresh,
            soft_nms_sigma=0.0, pad_to_max_output_size=True,
        )
        valid = tf.range(per_class) < count
        chosen.append(tf.where(valid, tf.gather(top_index[c], selected), tf.zeros_like(selected)))
        chosen_scores.append(tf.where(valid, selected_scores, -tf.ones_like(selected_scores)))
        full.append(tf.equal(count, per_class))
    classes = tf.repeat(tf.range(num_classes, dtype=tf.float32), per_class)
    flat = tf.concat(chosen, 0)
    fast, num = detections(_sorted({"boxes": tf.gather(boxes, flat), "scores": tf.concat(chosen_scores, 0),
                                    "classes": classes}))
    last = tf.where(tf.equal(num, config.max_total_size), fast["scores"][config.max_total_size - 1],
                    tf.constant(config.score_thresh, tf.float32))
    unseen_below = tf.logical_or(tf.stack(full), top_scores[:, k - 1] < last)
    exact = tf.reduce_all(unseen_below)
    return tf.cond(exact, lambda: (fast, num), lambda: detections(_per_class_nms(boxes, scores, config)))


def _pair_nms_or_per_class(boxes: Any, scores: Any, config: Any, detections: Callable[..., Any],
                           to_scores: Callable[[Any], Any] | None = None) -> tuple[Any, Any]:
    """The per-class NMS over the ``M`` best (box, class) pairs of all classes together, used when it
    provably gives the detections of the NMS over every box, else :func:`_fast_nms_or_full`.

    Greedy NMS takes a class's boxes best first, and whether it selects a box depends only on the
    boxes scoring higher; so over the pairs scoring above the ``M``-th pair's score ``t`` it selects
    exactly what the NMS over every box selects above ``t``. When the last of the ``max_total_size``
    detections (or the score threshold, with fewer) scores above ``t``, nothing below ``t`` can reach
    the output (a class that reached ``max_size_per_class`` among the pairs is complete anyway).
    One top-k over all pairs replaces a top-k per class, which took most of the post-processing time.

    ``to_scores``: when given, ``scores`` are values that rank the pairs as their scores do (logits)
    and ``to_scores`` (element-wise) turns them into scores.
    """
    import tensorflow as tf

    convert = to_scores or (lambda values: values)
    num_boxes, num_classes = int(boxes.shape[0]), int(scores.shape[1])
    per_class = min(config.max_size_per_class, num_boxes)
    m = PAIR_CANDIDATES_PER_DETECTION * config.max_total_size
    if m >= num_boxes * num_classes:
        return _fast_nms_or_full(boxes, convert(scores), config, detections)
    top_ranking, pair = tf.math.top_k(tf.reshape(scores, [-1]), k=m, sorted=True)
    top_scores = convert(top_ranking)
    box_index, class_index = pair // num_classes, pair % num_classes
    candidates = tf.gather(boxes, box_index)
    unused = tf.fill([m], tf.float32.min)
    chosen, chosen_scores = [], []
    for c in range(num_classes):
        selected, selected_scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=candidates, scores=tf.where(tf.equal(class_index, c), top_scores, unused),
            max_output_size=per_class, iou_threshold=config.iou_thresh, score_threshold=config.score_thresh,
            soft_nms_sigma=0.0, pad_to_max_output_size=True,
        )
        valid = tf.range(per_class) < count
        chosen.append(tf.where(valid, tf.gather(box_index, selected), tf.zeros_like(selected)))
        chosen_scores.append(tf.where(valid, selected_scores, -tf.ones_like(selected_scores)))
    classes = tf.repeat(tf.range(num_classes, dtype=tf.float32), per_class)
    fast, num = detections(_sorted({"boxes": tf.gather(boxes, tf.concat(chosen, 0)),
                                    "scores": tf.concat(chosen_scores, 0), "classes": classes}))
    last = tf.where(tf.equal(num, config.max_total_size), fast["scores"][config.max_total_size - 1],
                    tf.constant(config.score_thresh, tf.float32))
    exact = top_scores[m - 1] < last
    return tf.cond(exact, lambda: (fast, num), lambda: _fast_nms_or_full(boxes, convert(scores), config, detections))


def _sorted(fields: dict[str, Any]) -> dict[str, Any]:
    import tensorflow as tf

    _, order = tf.math.top_k(fields["scores"], k=tf.shape(fields["scores"])[0], sorted=True)
    return {k: tf.gather(v, order) for k, v in fields.items()}


def _per_class_nms(boxes: Any, scores: Any, config: Any) -> dict[str, Any]:
    """Every class's NMS selection (``max_size_per_class`` rows each, class order, unused rows scored
    -1), concatenated and sorted by score: the candidates :func:`zoo.models.nms.multiclass_nms` keeps.
    One ``NON_MAX_SUPPRESSION_V5`` per class."""
    import tensorflow as tf

    num_classes = int(scores.shape[1])
    num_boxes = boxes.shape[0]
    per_class = config.max_size_per_class if num_boxes is None else min(config.max_size_per_class, int(num_boxes))

    chosen, chosen_scores = [], []
    for c in range(num_classes):  # unrolled: the quantizer cannot calibrate a WHILE loop
        selected, selected_scores, count = tf.raw_ops.NonMaxSuppressionV5(
            boxes=boxes, scores=scores[:, c], max_output_size=per_class,
            iou_threshold=config.iou_thresh, score_threshold=config.score_thresh,
            soft_nms_sigma=0.0, pad_to_max_output_size=True,
        )
        valid = tf.range(per_class) < count
        chosen.append(tf.where(valid, selected, tf.zeros_like(selected)))
        chosen_scores.append(tf.where(valid, selected_scores, -tf.ones_like(selected_scores)))
    flat = tf.concat(chosen, 0)
    flat_scores = tf.concat(chosen_scores, 0)
    classes = tf.repeat(tf.range(num_classes, dtype=tf.float32), per_class)
    fields = {"boxes": tf.gather(boxes, flat), "scores": flat_scores, "classes": classes}
    return _sorted(fields)


def _clip_and_prune(fields: dict[str, Any], window: Any, change_frame: bool) -> dict[str, Any]:
    """As :mod:`zoo.models.nms`: clip to the window, drop zero-area boxes, re-sort; slices instead of
    unstack so that an empty selection stays valid in TFLite."""
    import tensorflow as tf

    low = tf.stack([window[0], window[1], window[0], window[1]])
    high = tf.stack([window[2], window[3], window[2], window[3]])
    clipped = tf.maximum(tf.minimum(fields["boxes"], high), low)

    def area(b: Any) -> Any:
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    fields = dict(fields, boxes=clipped)
    keep = tf.reshape(tf.where(area(clipped) > 0.0), [-1])
    fields = {k: tf.gather(v, keep) for k, v in fields.items()}
    nonzero = tf.not_equal(area(fields["boxes"]), 0.0)
    fields["scores"] = tf.where(nonzero, fields["scores"], -tf.ones_like(fields["scores"]))
    fields = _sorted(fields)
    if change_frame:
        size = high - low
        fields["boxes"] = (fields["boxes"] - low) * (1.0 / size)
    return fields
