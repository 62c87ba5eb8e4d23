"""pipeline.config (+ registry spec) -> a Keras model of ours.

Meta-architectures are dispatched on the ``model { ... }`` block: ``center_net`` (here), ``ssd``
(:mod:`zoo.models.ssd`) and ``faster_rcnn`` (:mod:`zoo.models.faster_rcnn`). Every model object
offers ``keras_model``, ``checkpoint_map()``, ``class_dependent_keys()``, ``num_classes``,
``preprocess`` / ``predict`` / ``postprocess`` and ``__call__(images)`` (all three stages). A
meta-architecture or feature extractor without an implementation raises
:class:`~zoo.errors.UnsupportedModelError` pointing at ``backend="saved_model"``.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError, UnsupportedModelError
from ..labels import COCO_LABELS, PERSON_KEYPOINTS
from ..pipeline_config import Message, load, model_config

__all__ = ["build_model", "centernet_config", "supported_meta_architectures"]

# Open Images machine ids used as keypoint_class_name in the zoo configs -> display name.
_CLASS_NAME_ALIASES = {"/m/01g317": "person"}

# meta-architecture -> (module, builder function); builder(msg, *, num_classes, label_map) -> model.
_META_BUILDERS: dict[str, tuple[str, str]] = {
    "center_net": (__name__, "build_centernet"),
    "ssd": ("zoo.models.ssd", "build_ssd"),
    "faster_rcnn": ("zoo.models.faster_rcnn", "build_faster_rcnn"),
}


def _builder(arch: str) -> Callable[..., Any] | None:
    entry = _META_BUILDERS.get(arch)
    if entry is None:
        return None
    module_name, function = entry
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    return getattr(module, function, None)


def supported_meta_architectures() -> list[str]:
    """Meta-architectures with a Keras implementation."""
    return sorted(arch for arch in _META_BUILDERS if _builder(arch) is not None)


def build_model(
    config: Message | str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    label_map: Mapping[int, str] | None = None,
) -> Any:
    """Build the model a pipeline.config describes (weights freshly initialised).

    ``num_classes`` overrides the config's class count (class-dependent head layers change shape).
    ``label_map`` (label id -> name) resolves keypoint class names; COCO by default.
    """
    cfg = config if isinstance(config, Message) else load(config)
    arch, msg = model_config(cfg)
    builder = _builder(arch)
    if builder is None:
        known = ", ".join(supported_meta_architectures())
        raise UnsupportedModelError(
            f"meta-architecture {arch!r} has no Keras implementation in odzoo (implemented: {known}); "
            "load it with backend='saved_model' to run the archive's exported SavedModel"
        )
    return builder(msg, num_classes=num_classes, label_map=label_map)


def build_centernet(msg: Message, *, num_classes: int | None = None, label_map: Mapping[int, str] | None = None) -> Any:
    """A :class:`~zoo.models.centernet.CenterNet` from the ``model.center_net`` message."""
    from .backbones import get_backbone
    from .centernet import CenterNet
    from .preprocess import resizer_from_config

    if "feature_extractor" not in msg:
        raise ConfigError("center_net config has no feature_extractor block")
    backbone = get_backbone(msg["feature_extractor"])
    if "image_resizer" not in msg:
        raise ConfigError("center_net config has no image_resizer block")
    resizer = resizer_from_config(msg["image_resizer"])
    return CenterNet(centernet_config(msg, num_classes=num_classes, label_map=label_map), backbone, resizer)


def _class_id(name: str, label_map: Mapping[int, str]) -> int:
    wanted = _CLASS_NAME_ALIASES.get(name, name)
    for label_id, label in label_map.items():
        if label == wanted:
            return int(label_id) - 1
    raise ConfigError(f"keypoint_class_name {name!r} is not in the label map; add it or fix the config")


def _ints(msg: Message, field: str, default: tuple[int, ...]) -> tuple[int, ...]:
    values = msg.all(field) if field in msg else []
    flat: list[int] = []
    for v in values:
        flat += [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]
    return tuple(flat) or default


def centernet_config(msg: Message, *, num_classes: int | None = None, label_map: Mapping[int, str] | None = None) -> Any:
    """Read a ``center_net`` message into a :class:`~zoo.models.centernet.CenterNetConfig`."""
    from .centernet import (
        BOX_OFFSET,
        BOX_SCALE,
        OBJECT_CENTER,
        CenterNetConfig,
        HeadSpec,
        KeypointTask,
    )

    classes = int(num_classes if num_classes is not None else msg.get("num_classes", 0))
    if classes <= 0:
        raise ConfigError(f"center_net num_classes must be positive, got {classes}")
    center = msg["object_center_params"] if "object_center_params" in msg else Message()
    heads = [
        HeadSpec(
            OBJECT_CENTER,
            classes,
            num_filters=_ints(center, "center_head_num_filters", (256,)),
            kernel_sizes=_ints(center, "center_head_kernel_sizes", (3,)),
            bias_fill=float(center.get("heatmap_bias_init", -2.19)),
            class_dependent=True,
        )
    ]
    detect_boxes = "object_detection_task" in msg
    if detect_boxes:
        od = msg["object_detection_task"]
        heads += [
            HeadSpec(BOX_SCALE, 2, _ints(od, "scale_head_num_filters", (256,)), _ints(od, "scale_head_kernel_sizes", (3,))),
            HeadSpec(BOX_OFFSET, 2, _ints(od, "offset_head_num_filters", (256,)), _ints(od, "offset_head_kernel_sizes", (3,))),
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
        filters = _ints(kp, "heatmap_head_num_filters", (256,))
        sizes = _ints(kp, "heatmap_head_kernel_sizes", (3,))
        heads += [
            HeadSpec(task.head("heatmap"), num_kp, filters, sizes, bias_fill=float(kp.get("heatmap_bias_init", -2.19))),
            HeadSpec(task.head("regression"), 2 * num_kp, _ints(kp, "regress_head_num_filters", (256,)),
                     _ints(kp, "regress_head_kernel_sizes", (3,))),
            HeadSpec(task.head("offset"), 2 * num_kp if per_kp else 2, _ints(kp, "offset_head_num_filters", (256,)),
                     _ints(kp, "offset_head_kernel_sizes", (3,))),
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
