"""The CenterNet meta-architecture ("Objects as Points") in Keras 3, faithful to the TF2 OD API.

:class:`CenterNet` owns a backbone (:class:`Backbone`, implementations in
:mod:`zoo.models.backbones.centernet`), the prediction heads and the functional ``keras_model``
(preprocessed images -> raw head outputs), and implements the three stages of the original:
:meth:`CenterNet.preprocess` (resize + backbone normalization), :meth:`CenterNet.predict` and
:meth:`CenterNet.postprocess` (peak extraction, boxes, keypoints). :func:`build_centernet` reads the
``model.center_net`` block. Quirks of the original are reproduced on purpose, e.g. the true-image
mask compares output-grid indices with pixel sizes, so centres in the zero padding of a non-square
input are not masked.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import keras
import tensorflow as tf

from ..errors import ConfigError
from ..labels import COCO_LABELS, PERSON_KEYPOINTS
from ..pipeline_config import Message, parse
from . import fields, registry
from .fields import ints, require_blocks
from .preprocess import Resizer, resize_batch, resizer_from_config

__all__ = [
    "BOX_OFFSET", "BOX_SCALE", "OBJECT_CENTER", "Backbone", "CenterNet", "CenterNetConfig", "HeadSpec",
    "KeypointTask", "boxes_at_peaks", "boxes_from_head_values", "build_centernet", "centernet_config", "get_backbone", "top_k_locations", "true_image_mask",
]

OBJECT_CENTER = "object_center"
BOX_SCALE = "box/scale"
BOX_OFFSET = "box/offset"
PEAK_EPSILON = 1e-6
# Open Images machine ids used as keypoint_class_name in the zoo configs -> display name.
_CLASS_NAME_ALIASES = {"/m/01g317": "person"}
_HEAD_PREFIX = "model/_prediction_head_dict/"
_BACKBONE_PREFIX = "model/_feature_extractor/"


# ---------------------------------------------------------------------- backbones
@runtime_checkable
class Backbone(Protocol):
    """A CenterNet feature extractor, registered with ``@register_feature_extractor(type,
    meta="center_net")``; its factory takes the ``center_net.feature_extractor`` message.

    ``preprocess(images)`` gets a float32 ``[B, H, W, 3]`` tensor of *resized* RGB values in 0..255
    (padding included) and returns the network input exactly as the original extractor computes it
    (pure tensor ops: it runs inside a ``tf.function`` over dynamic shapes). ``build()`` returns a new
    functional model mapping that input (``shape=(None, None, 3)``) to a *list* of stride-4 feature
    maps, one per head stack (hourglass_104 has 2; the others 1); inference-time quirks of the
    original (e.g. BatchNorm statistics) are reproduced inside it. ``checkpoint_map(model)`` keys
    every variable of that model by its checkpoint key relative to ``model/_feature_extractor/``
    (without ``/.ATTRIBUTES/VARIABLE_VALUE``); the restore is strict. Optional: ``stride`` (default
    4), ``name``.
    """

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Resized float RGB 0..255 ``[B,H,W,3]`` -> the network's input."""
        ...

    def build(self) -> keras.Model:
        """A fresh functional model: preprocessed ``[B,H,W,3]`` -> list of stride-4 feature maps."""
        ...

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        ...


def get_backbone(feature_extractor_config: Message | str) -> Backbone:
    """Build the backbone for a ``feature_extractor`` message (or a bare type string)."""
    if isinstance(feature_extractor_config, str):
        feature_extractor_config = parse(f'type: "{feature_extractor_config}"')
    factory = registry.feature_extractor("center_net", str(feature_extractor_config.get("type", "")))
    return factory(feature_extractor_config)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One prediction head: name (e.g. ``box/scale``), output channels, conv tower, initial bias."""

    name: str
    channels: int
    num_filters: tuple[int, ...] = (256,)
    kernel_sizes: tuple[int, ...] = (3,)
    bias_fill: float | None = None
    class_dependent: bool = False


@dataclasses.dataclass(frozen=True)
class KeypointTask:
    """One ``keypoint_estimation_task``: its heads, its object class and its decoding parameters."""

    name: str
    class_id: int  # 0-based model class whose detections get keypoints
    num_keypoints: int
    keypoint_indices: tuple[int, ...]
    per_keypoint_offset: bool = False
    candidate_score_threshold: float = 0.1
    peak_max_pool_kernel_size: int = 3
    num_candidates_per_keypoint: int = 100
    unmatched_keypoint_score: float = 0.1
    box_scale: float = 1.2
    candidate_search_scale: float = 0.3
    candidate_ranking_mode: str = "min_distance"
    score_distance_offset: float = 1e-6
    clip_out_of_frame_keypoints: bool = False

    def head(self, kind: str) -> str:
        """Head name for ``heatmap``, ``offset`` or ``regression``."""
        return f"{self.name}/keypoint/{kind}"


@dataclasses.dataclass(frozen=True)
class CenterNetConfig:
    """What the meta-architecture reads from ``model.center_net`` of a pipeline.config."""

    num_classes: int
    max_detections: int = 100
    peak_max_pool_kernel_size: int = 3
    use_depthwise: bool = False
    heads: tuple[HeadSpec, ...] = ()
    keypoint_tasks: tuple[KeypointTask, ...] = ()
    detect_boxes: bool = True


def _safe(name: str) -> str:
    return name.replace("/", "__")


class CenterNet:
    """Backbone + heads as one functional Keras model, with the original's pre/post-processing."""

    def __init__(self, config: CenterNetConfig, backbone: Backbone, resizer: Resizer) -> None:
        self.config = config
        self.backbone = backbone
        self.resizer = resizer
        self.stride = int(getattr(backbone, "stride", 4))
        self.backbone_model = backbone.build()
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        features = self.backbone_model(inputs)
        if not isinstance(features, (list, tuple)):
            features = [features]
        self.num_stacks = len(features)
        self.heads: dict[str, list[keras.Sequential]] = {}
        outputs: dict[str, Any] = {}
        for spec in config.heads:
            stacks = []
            for i, feature in enumerate(features):
                net = self._make_head(spec, i)
                stacks.append(net)
                outputs[f"{spec.name}_{i}"] = net(feature)
            self.heads[spec.name] = stacks
        self.keras_model = keras.Model(inputs, outputs, name="center_net")

    # ------------------------------------------------------------------ construction
    def _make_head(self, spec: HeadSpec, index: int) -> keras.Sequential:
        layers: list[keras.layers.Layer] = []
        for j, (filters, size) in enumerate(zip(spec.num_filters, spec.kernel_sizes)):
            if self.config.use_depthwise:
                layers.append(keras.layers.SeparableConv2D(filters, size, padding="same", name=f"conv{j}"))
            else:
                layers.append(keras.layers.Conv2D(filters, size, padding="same", name=f"conv{j}"))
            layers.append(keras.layers.ReLU(name=f"relu{j}"))
        bias = keras.initializers.Constant(spec.bias_fill) if spec.bias_fill is not None else "zeros"
        layers.append(keras.layers.Conv2D(spec.channels, 1, bias_initializer=bias, name="out"))
        return keras.Sequential(layers, name=f"head_{_safe(spec.name)}_{index}")

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def checkpoint_map(self) -> dict[str, keras.Variable]:
        """Full checkpoint key (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variable, for every variable."""
        out = {_BACKBONE_PREFIX + k: v for k, v in self.backbone.checkpoint_map(self.backbone_model).items()}
        for name, stacks in self.heads.items():
            ck_name = name.replace("/", ".S")
            for i, net in enumerate(stacks):
                for n, layer in enumerate(l for l in net.layers if l.weights):
                    for w in layer.weights:
                        out[f"{_HEAD_PREFIX}{ck_name}/{i}/layer_with_weights-{n}/{w.name}"] = w
        return out

    def class_dependent_keys(self) -> list[str]:
        """Checkpoint keys whose shape depends on the number of classes (final layers of class heads)."""
        keys = []
        for spec in self.config.heads:
            if spec.class_dependent:
                ck_name = spec.name.replace("/", ".S")
                last = len(spec.num_filters)
                for i in range(self.num_stacks):
                    for w in ("kernel", "bias"):
                        keys.append(f"{_HEAD_PREFIX}{ck_name}/{i}/layer_with_weights-{last}/{w}")
        return keys

    # ------------------------------------------------------------------ the three stages
    def preprocess(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``[B,H,W,3]`` images (any real dtype, RGB 0..255) -> (network input, true shapes [B,3])."""
        resized, true_shapes = resize_batch(self.resizer, images)
        return self.backbone.preprocess(resized), true_shapes

    def predict(self, preprocessed: tf.Tensor, training: bool = False) -> dict[str, list[tf.Tensor]]:
        """Raw head outputs: head name -> one tensor per feature stack."""
        flat = self.keras_model(preprocessed, training=training)
        return {name: [flat[f"{name}_{i}"] for i in range(self.num_stacks)] for name in self.heads}

    def postprocess(self, predictions: dict[str, list[tf.Tensor]], true_shapes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections as the original's ``postprocess``: normalized boxes, 0-based classes, keypoints."""
        center = tf.sigmoid(predictions[OBJECT_CENTER][-1])
        center = center * true_image_mask(center, true_shapes)
        scores, ys, xs, classes = top_k_locations(
            center, self.config.peak_max_pool_kernel_size, self.config.max_detections
        )
        multiclass = tf.gather_nd(center, tf.stack([ys, xs], -1), batch_dims=1)
        num = tf.reduce_sum(tf.cast(scores > 0, tf.int32), axis=1)
        out = {
            "detection_scores": scores,
            "detection_multiclass_scores": multiclass,
            "detection_classes": classes,
            "num_detections": num,
        }
        strided = None
        if self.config.detect_boxes:
            strided = boxes_at_peaks(ys, xs, predictions[BOX_SCALE][-1], predictions[BOX_OFFSET][-1])
            out["detection_boxes"] = normalize_strided(strided, self.stride, true_shapes)
            out["detection_boxes_strided"] = strided
        if self.config.keypoint_tasks:
            kps, kp_scores = postprocess_keypoints(
                self.config.keypoint_tasks, predictions, classes, ys, xs, strided, num, self.stride, true_shapes,
                single_class=self.config.num_classes == 1,
            )
            out["detection_keypoints"] = kps
            out["detection_keypoint_scores"] = kp_scores
        return out

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """preprocess -> predict -> postprocess on a ``[B,H,W,3]`` batch."""
        preprocessed, true_shapes = self.preprocess(images)
        return self.postprocess(self.predict(preprocessed), true_shapes)


# ---------------------------------------------------------------------- config
@registry.register_meta_architecture("center_net")
def build_centernet(
    msg: Message, *, num_classes: int | None = None, label_map: Mapping[int, str] | None = None
) -> CenterNet:
    """A :class:`CenterNet` (weights freshly initialised) from the ``model.center_net`` message."""
    require_blocks(msg, "center_net", "feature_extractor")
    backbone = get_backbone(msg["feature_extractor"])
    require_blocks(msg, "center_net", "image_resizer")
    resizer = resizer_from_config(msg["image_resizer"])
    return CenterNet(centernet_config(msg, num_classes=num_classes, label_map=label_map), backbone, resizer)


def _class_id(name: str, label_map: Mapping[int, str]) -> int:
    wanted = _CLASS_NAME_ALIASES.get(name, name)
    for label_id, label in label_map.items():
        if label == wanted:
            return int(label_id) - 1
    raise ConfigError(f"keypoint_class_name {name!r} is not in the label map; add it or fix the config")


def centernet_config(
    msg: Message, *, num_classes: int | None = None, label_map: Mapping[int, str] | None = None
) -> CenterNetConfig:
    """Read a ``center_net`` message into a :class:`CenterNetConfig`."""
    classes = fields.num_classes(msg, "center_net", num_classes)
    center = msg["object_center_params"] if "object_center_params" in msg else Message()
    heads = [
        HeadSpec(
            OBJECT_CENTER,
            classes,
            num_filters=ints(center, "center_head_num_filters", (256,)),
            kernel_sizes=ints(center, "center_head_kernel_sizes", (3,)),
            bias_fill=float(center.get("heatmap_bias_init", -2.19)),
            class_dependent=True,
        )
    ]
    detect_boxes = "object_detection_task" in msg
    if detect_boxes:
        od = msg["object_detection_task"]
        heads += [
            HeadSpec(BOX_SCALE, 2, ints(od, "scale_head_num_filters", (256,)), ints(od, "scale_head_kernel_sizes", (3,))),
            HeadSpec(BOX_OFFSET, 2, ints(od, "offset_head_num_filters", (256,)), ints(od, "offset_head_kernel_sizes", (3,))),
        ]
    tasks = []
    labels = dict(label_map) if label_map else dict(COCO_LABELS)
    for kp in msg.all("keypoint_estimation_task") if "keypoint_estimation_task" in msg else []:
        name = str(kp.get("task_name", "keypoint"))
        num_kp = len(PERSON_KEYPOINTS)
        indices = tuple(range(num_kp))
        per_kp = bool(kp.get("per_keypoint_offset", False))
        task = KeypointTask(
            name=name,
            class_id=_class_id(str(kp.get("keypoint_class_name", "person")), labels),
            num_keypoints=num_kp,
            keypoint_indices=indices,
            per_keypoint_offset=per_kp,
            candidate_score_threshold=float(kp.get("keypoint_candidate_score_threshold", 0.1)),
            peak_max_pool_kernel_size=int(kp.get("peak_max_pool_kernel_size", 3)),
            num_candidates_per_keypoint=int(kp.get("num_candidates_per_keypoint", 100)),
            unmatched_keypoint_score=float(kp.get("unmatched_keypoint_score", 0.1)),
            box_scale=float(kp.get("box_scale", 1.2)),
            candidate_search_scale=float(kp.get("candidate_search_scale", 0.3)),
            candidate_ranking_mode=str(kp.get("candidate_ranking_mode", "min_distance")),
            score_distance_offset=float(kp.get("score_distance_offset", 1e-6)),
            clip_out_of_frame_keypoints=bool(kp.get("clip_out_of_frame_keypoints", False)),
        )
        tasks.append(task)
        filters = ints(kp, "heatmap_head_num_filters", (256,))
        sizes = ints(kp, "heatmap_head_kernel_sizes", (3,))
        heads += [
            HeadSpec(task.head("heatmap"), num_kp, filters, sizes, bias_fill=float(kp.get("heatmap_bias_init", -2.19))),
            HeadSpec(task.head("regression"), 2 * num_kp, ints(kp, "regress_head_num_filters", (256,)),
                     ints(kp, "regress_head_kernel_sizes", (3,))),
            HeadSpec(task.head("offset"), 2 * num_kp if per_kp else 2, ints(kp, "offset_head_num_filters", (256,)),
                     ints(kp, "offset_head_kernel_sizes", (3,))),
        ]
    return CenterNetConfig(
        num_classes=classes,
        max_detections=int(center.get("max_box_predictions", 100)),
        peak_max_pool_kernel_size=int(center.get("peak_max_pool_kernel_size", 3)),
        use_depthwise=bool(msg.get("use_depthwise", False)),
        heads=tuple(heads),
        keypoint_tasks=tuple(tasks),
        detect_boxes=detect_boxes,
    )


def true_image_mask(heatmap: tf.Tensor, true_shapes: tf.Tensor) -> tf.Tensor:
    """1 where the grid row/column index is below the true image height/width (in *pixels*)."""
    shape = tf.shape(heatmap)
    rows = tf.range(shape[1])[tf.newaxis, :, tf.newaxis]
    cols = tf.range(shape[2])[tf.newaxis, tf.newaxis, :]
    heights = true_shapes[:, 0][:, tf.newaxis, tf.newaxis]
    widths = true_shapes[:, 1][:, tf.newaxis, tf.newaxis]
    mask = tf.logical_and(rows < heights, cols < widths)
    return tf.cast(mask, heatmap.dtype)[..., tf.newaxis]


def _local_peaks(heatmap: tf.Tensor, kernel: int) -> tf.Tensor:
    """``heatmap`` where it equals its ``kernel`` x ``kernel`` maximum (within :data:`PEAK_EPSILON`), else 0."""
    if not kernel or kernel <= 1:
        return heatmap
    pooled = tf.nn.max_pool2d(heatmap, ksize=kernel, strides=1, padding="SAME")
    # |heatmap - pooled| is pooled - heatmap (the window holds its centre), and selecting is exact
    # where multiplying by a 0/1 mask costs a cast and a product over the whole map
    return tf.where(pooled - heatmap < PEAK_EPSILON, heatmap, tf.zeros_like(heatmap))


def _decode_flat(flat: tf.Tensor, width: tf.Tensor, channels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Flat ``[H, W, C]`` indices -> ``(y, x, channel)``."""
    pixel = flat // channels
    ys = pixel // width
    return ys, pixel - ys * width, flat - pixel * channels


def top_k_locations(heatmap: tf.Tensor, kernel: int, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Top-k local peaks over H*W*C: ``(scores, y, x, channel)``, each ``[B, k]``."""
    peaks = _local_peaks(heatmap, kernel)
    shape = tf.shape(heatmap)
    flat_peaks = tf.reshape(peaks, [shape[0], -1])
    scores, flat = tf.math.top_k(flat_peaks, k=tf.minimum(k, tf.shape(flat_peaks)[1]))
    return (scores, *_decode_flat(flat, shape[2], shape[3]))


def boxes_at_peaks(ys: tf.Tensor, xs: tf.Tensor, sizes: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
    """Boxes ``[B, k, 4]`` (ymin, xmin, ymax, xmax) in output-grid units, clipped to the grid."""
    index = tf.stack([ys, xs], -1)
    shape = tf.shape(sizes)
    return boxes_from_head_values(
        ys, xs, tf.gather_nd(sizes, index, batch_dims=1), tf.gather_nd(offsets, index, batch_dims=1), shape[1], shape[2]
    )


def boxes_from_head_values(
    ys: tf.Tensor, xs: tf.Tensor, sizes: tf.Tensor, offsets: tf.Tensor, grid_h: Any, grid_w: Any
) -> tf.Tensor:
    """:func:`boxes_at_peaks` from the head values at the peaks (``sizes``, ``offsets``: ``[B, k, 2]``)."""
    hw = tf.maximum(sizes, 0.0)
    grid_h = tf.cast(grid_h, tf.float32)
    grid_w = tf.cast(grid_w, tf.float32)
    cy = tf.cast(ys, tf.float32) + offsets[..., 0]
    cx = tf.cast(xs, tf.float32) + offsets[..., 1]
    h, w = hw[..., 0], hw[..., 1]
    return tf.stack(
        [
            tf.clip_by_value(cy - h / 2.0, 0.0, grid_h),
            tf.clip_by_value(cx - w / 2.0, 0.0, grid_w),
            tf.clip_by_value(cy + h / 2.0, 0.0, grid_h),
            tf.clip_by_value(cx + w / 2.0, 0.0, grid_w),
        ],
        axis=2,
    )


def normalize_strided(boxes: tf.Tensor, stride: int, true_shapes: tf.Tensor) -> tf.Tensor:
    """Grid boxes -> boxes normalized by the true (unpadded) image size, clipped to [0, 1]."""
    boxes = boxes * float(stride)
    h = tf.cast(true_shapes[:, 0], tf.float32)[:, tf.newaxis]
    w = tf.cast(true_shapes[:, 1], tf.float32)[:, tf.newaxis]
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=2)
    out = tf.stack([ymin / h, xmin / w, ymax / h, xmax / w], axis=2)
    return tf.clip_by_value(out, 0.0, 1.0)


# ---------------------------------------------------------------------- keypoints
def _top_k_per_channel(heatmap: tf.Tensor, kernel: int, k: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Top-k peaks of every channel: ``(scores, y, x, channel)`` each ``[B, C*k]``, channel-major."""
    peaks = _local_peaks(heatmap, kernel)
    shape = tf.shape(heatmap)
    batch, width, channels = shape[0], shape[2], shape[3]
    per_channel = tf.reshape(tf.transpose(peaks, [0, 3, 1, 2]), [batch, channels, -1])
    scores, flat = tf.math.top_k(per_channel, k=k)
    flat = channels * flat + tf.range(channels)[tf.newaxis, :, tf.newaxis]
    scores = tf.reshape(scores, [batch, -1])
    flat = tf.reshape(flat, [batch, -1])
    return (scores, *_decode_flat(flat, width, channels))


def keypoint_candidates(
    heatmap: tf.Tensor, offsets: tf.Tensor, task: KeypointTask
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per-keypoint heatmap peaks: candidates ``[B,k,K,2]`` (y, x grid units), scores ``[B,k,K]``, counts ``[B,K]``."""
    k = task.num_candidates_per_keypoint
    scores, ys, xs, cs = _top_k_per_channel(heatmap, task.peak_max_pool_kernel_size, k)
    batch = tf.shape(heatmap)[0]
    num_kp = task.num_keypoints
    picked = tf.gather_nd(offsets, tf.stack([ys, xs], -1), batch_dims=1)  # [B, K*k, C_off]
    if task.per_keypoint_offset:
        picked = tf.reshape(picked, [batch, num_kp * k, num_kp, 2])
        picked = tf.gather(picked, cs, axis=2, batch_dims=2)
    cand = tf.stack([tf.cast(ys, tf.float32) + picked[..., 0], tf.cast(xs, tf.float32) + picked[..., 1]], axis=2)
    cand = tf.transpose(tf.reshape(cand, [batch, num_kp, k, 2]), [0, 2, 1, 3])
    scores = tf.transpose(tf.reshape(scores, [batch, num_kp, k]), [0, 2, 1])
    counts = tf.reduce_sum(tf.cast(scores >= task.candidate_score_threshold, tf.int32), axis=1)
    return cand, scores, counts


def refine_keypoints(
    regressed: tf.Tensor,
    candidates: tf.Tensor,
    scores: tf.Tensor,
    counts: tf.Tensor,
    boxes: tf.Tensor | None,
    task: KeypointTask,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Snap keypoints regressed from object centres ``[B,N,K,2]`` to nearby heatmap candidates."""
    k = tf.shape(candidates)[1]
    invalid = tf.range(k)[tf.newaxis, :, tf.newaxis] >= counts[:, tf.newaxis, :]  # [B,k,K]
    diff = regressed[:, :, tf.newaxis] - candidates[:, tf.newaxis]  # [B,N,k,K,2]
    distances = tf.sqrt(tf.reduce_sum(diff * diff, axis=-1))
    distances = tf.where(invalid[:, tf.newaxis], tf.ones_like(distances) * 1e5, distances)
    min_distances = tf.reduce_min(distances, axis=2)
    mode = task.candidate_ranking_mode
    if mode == "min_distance":
        chosen = tf.argmin(distances, axis=2, output_type=tf.int32)
    elif mode == "score_distance_ratio":
        ranking = scores[:, tf.newaxis] / (distances + task.score_distance_offset)
        chosen = tf.argmax(ranking, axis=2, output_type=tf.int32)
    else:
        raise ValueError(f"candidate_ranking_mode {mode!r} is not supported (min_distance, score_distance_ratio)")
    # Gather per (batch, instance, keypoint) the chosen candidate.
    cand_t = tf.transpose(candidates, [0, 2, 1, 3])  # [B,K,k,2]
    score_t = tf.transpose(scores, [0, 2, 1])  # [B,K,k]
    chosen_t = tf.transpose(chosen, [0, 2, 1])  # [B,K,N]
    near = tf.transpose(tf.gather(cand_t, chosen_t, axis=2, batch_dims=2), [0, 2, 1, 3])
    near_scores = tf.transpose(tf.gather(score_t, chosen_t, axis=2, batch_dims=2), [0, 2, 1])
    reject = near_scores < task.candidate_score_threshold
    if boxes is not None:
        ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=2)
        h, w = ymax - ymin, xmax - xmin
        yc, xc = ymin + h / 2.0, xmin + w / 2.0
        s = task.box_scale
        ymin, ymax = yc - 0.5 * s * h, yc + 0.5 * s * h
        xmin, xmax = xc - 0.5 * s * w, xc + 0.5 * s * w
        ymin, xmin, ymax, xmax = (t[..., tf.newaxis] for t in (ymin, xmin, ymax, xmax))
        radius = tf.maximum(ymax - ymin, xmax - xmin) * task.candidate_search_scale
        reject = (
            reject
            | (near[..., 0] < ymin)
            | (near[..., 0] > ymax)
            | (near[..., 1] < xmin)
            | (near[..., 1] > xmax)
            | (min_distances > radius)
        )
    refined = tf.where(reject[..., tf.newaxis], regressed, near)
    refined_scores = tf.where(reject, task.unmatched_keypoint_score * tf.ones_like(near_scores), near_scores)
    return refined, refined_scores


def postprocess_keypoints(
    tasks: tuple[KeypointTask, ...],
    predictions: dict[str, list[tf.Tensor]],
    classes: tf.Tensor,
    ys: tf.Tensor,
    xs: tf.Tensor,
    boxes: tf.Tensor | None,
    num_detections: tf.Tensor,
    stride: int,
    true_shapes: tf.Tensor,
    *,
    single_class: bool = False,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Keypoints of every detection: normalized ``[B,N,K,2]`` (y, x) and scores ``[B,N,K]``.

    Only detections of a task's class (and within ``num_detections``) get keypoints; the others
    keep zeros, as in the original. A one-class model with one keypoint task decodes every
    detection (the original's single-class path applies no class or count mask). Every detection is decoded and the rest masked, which gives
    the same values as decoding the selected detections alone (instances are independent).
    """
    total = sum(len(t.keypoint_indices) for t in tasks)
    n = tf.shape(classes)[1]
    coords_all = None
    scores_all = None
    clip = any(t.clip_out_of_frame_keypoints for t in tasks)
    for task in tasks:
        heatmap = tf.sigmoid(predictions[task.head("heatmap")][-1])
        offsets = predictions[task.head("offset")][-1]
        regression = predictions[task.head("regression")][-1]
        reg = tf.gather_nd(regression, tf.stack([ys, xs], -1), batch_dims=1)  # [B,N,2K]
        batch = tf.shape(reg)[0]
        reg = tf.reshape(reg, [batch, n, task.num_keypoints, 2])
        regressed = reg + tf.stack([tf.cast(ys, tf.float32), tf.cast(xs, tf.float32)], -1)[:, :, tf.newaxis, :]
        cand, cand_scores, counts = keypoint_candidates(heatmap, offsets, task)
        coords, kp_scores = refine_keypoints(regressed, cand, cand_scores, counts, boxes, task)
        if single_class and len(tasks) == 1:
            valid = tf.ones_like(classes, tf.bool)
        else:
            valid = tf.logical_and(
                tf.equal(classes, task.class_id), tf.range(n)[tf.newaxis] < num_detections[:, tf.newaxis]
            )
        coords = tf.where(valid[..., tf.newaxis, tf.newaxis], coords, tf.zeros_like(coords))
        kp_scores = tf.where(valid[..., tf.newaxis], kp_scores, tf.zeros_like(kp_scores))
        index = tf.constant(task.keypoint_indices, tf.int32)[:, tf.newaxis]
        placed_c = tf.scatter_nd(index, tf.transpose(coords, [2, 0, 1, 3]), [total, batch, n, 2])
        placed_s = tf.scatter_nd(index, tf.transpose(kp_scores, [2, 0, 1]), [total, batch, n])
        coords_all = placed_c if coords_all is None else coords_all + placed_c
        scores_all = placed_s if scores_all is None else scores_all + placed_s
    coords_all = tf.transpose(coords_all, [1, 2, 0, 3])
    scores_all = tf.transpose(scores_all, [1, 2, 0])
    scale = tf.stack(
        [float(stride) / tf.cast(true_shapes[:, 0], tf.float32), float(stride) / tf.cast(true_shapes[:, 1], tf.float32)],
        axis=1,
    )
    coords_all = coords_all * scale[:, tf.newaxis, tf.newaxis, :]
    if clip:
        inside = tf.reduce_all((coords_all >= 0.0) & (coords_all <= 1.0), axis=-1)
        coords_all = tf.clip_by_value(coords_all, 0.0, 1.0)
        scores_all = tf.where(inside, scores_all, tf.zeros_like(scores_all))
    return coords_all, scores_all
