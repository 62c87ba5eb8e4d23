"""COCO evaluation: exact conversions of detections to COCO results, and the evaluators."""
from __future__ import annotations

from .coco_results import (
    category_mapping,
    detections_to_coco,
    load_results,
    write_results,
)
from .evaluate import BOX_STAT_NAMES, KEYPOINT_STAT_NAMES, EvalResult, available_evaluators, evaluate

__all__ = [
    "BOX_STAT_NAMES",
    "KEYPOINT_STAT_NAMES",
    "EvalResult",
    "available_evaluators",
    "category_mapping",
    "detections_to_coco",
    "evaluate",
    "load_results",
    "write_results",
]
