"""How closely an exported model reproduces the in-memory model's detections.

:func:`compare_detections` matches one image's detections: each reference detection scoring at least
``min_score`` (best first) is paired with the unused candidate detection of the same class that
overlaps it most (IoU >= ``iou``). :func:`measure_agreement` runs two detectors over images and
summarises. Float exports are expected to be at parity (:func:`at_parity`: every detection found,
boxes within 1 pixel, scores within 1e-3 relative); quantized exports report how far they moved.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["at_parity", "compare_detections", "measure_agreement"]

#: parity limits for float exports
BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE_REL = 1e-3


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[4]`` pixel box (x0, y0, x1, y1) with ``[N, 4]``; two zero-area boxes at the same
    place (detections clipped at the border) count as overlapping fully."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    same_place = (np.abs(boxes - box).max(axis=1) <= BOX_TOLERANCE_PX).astype(np.float64)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), same_place)


def compare_detections(reference: Any, candidate: Any, *, min_score: float = 0.1, iou: float = 0.5) -> dict[str, Any]:
    """Agreement of ``candidate`` with ``reference`` (two :class:`~zoo.detections.Detections` of one image).

    Returns ``compared`` (reference detections scoring >= ``min_score``), ``matched`` (fraction of
    them with a same-class candidate at IoU >= ``iou``), ``mean_iou`` and, over the matches,
    ``max_box_px`` (largest coordinate difference in pixels) and ``max_score_rel`` (largest score
    difference relative to the reference score).
    """
    ref_boxes = np.asarray(reference.boxes, np.float64).reshape(-1, 4)
    ref_scores = np.asarray(reference.scores, np.float64)
    ref_classes = np.asarray(reference.classes)
    cand_boxes = np.asarray(candidate.boxes, np.float64).reshape(-1, 4)
    cand_scores = np.asarray(candidate.scores, np.float64)
    cand_classes = np.asarray(candidate.classes)
    order = [i for i in np.argsort(-ref_scores, kind="stable") if ref_scores[i] >= min_score]
    used = np.zeros(len(cand_scores), bool)
    ious: list[float] = []
    box_px: list[float] = []
    score_rel: list[float] = []
    for i in order:
        if not len(cand_scores):
            break
        overlap = np.where((cand_classes == ref_classes[i]) & ~used, _iou(ref_boxes[i], cand_boxes), -1.0)
        best = int(np.argmax(overlap))
        if overlap[best] < iou:
            continue
        used[best] = True
        ious.append(float(overlap[best]))
        box_px.append(float(np.abs(cand_boxes[best] - ref_boxes[i]).max()))
        score_rel.append(abs(float(cand_scores[best]) - float(ref_scores[i])) / max(abs(float(ref_scores[i])), 1e-12))
    compared = len(order)
    return {
        "compared": compared,
        "matched": len(ious) / compared if compared else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "max_box_px": max(box_px) if box_px else None,
        "max_score_rel": max(score_rel) if score_rel else None,
    }


def measure_agreement(
    reference: Any, candidate: Any, images: Iterable[Any], *, min_score: float = 0.1, iou: float = 0.5
) -> dict[str, Any]:
    """Agreement of two detectors over ``images``: per-image :func:`compare_detections` summarised
    (``images``, ``compared``, worst ``matched`` and ``mean_iou``, largest ``max_box_px`` and
    ``max_score_rel``), plus ``parity`` (:func:`at_parity`)."""
    results = [compare_detections(reference.detect(image), candidate.detect(image), min_score=min_score, iou=iou)
               for image in images]

    def worst(key: str, pick: Any) -> Any:
        values = [r[key] for r in results if r[key] is not None]
        return pick(values) if values else None

    summary = {
        "images": len(results),
        "compared": sum(r["compared"] for r in results),
        "matched": worst("matched", min),
        "mean_iou": worst("mean_iou", min),
        "max_box_px": worst("max_box_px", max),
        "max_score_rel": worst("max_score_rel", max),
    }
    summary["parity"] = at_parity(summary)
    return summary


def at_parity(agreement: dict[str, Any]) -> bool:
    """Every reference detection found, boxes within 1 px and scores within 1e-3 relative."""
    if agreement.get("matched") != 1.0:
        return False
    px, rel = agreement.get("max_box_px"), agreement.get("max_score_rel")
    return (px is None or px <= BOX_TOLERANCE_PX) and (rel is None or rel <= SCORE_TOLERANCE_REL)
