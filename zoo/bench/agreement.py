"""How far a speed option (float16, bfloat16, XLA...) moves a model's detections from float32's.

:func:`detection_agreement` compares two serving-style output dicts of the same image (``[1, N, 4]``
normalized boxes, ``[1, N]`` scores and classes, as the backends return them): the reference's top
detections are matched greedily, best score first, to unused candidate detections of the same class
at IoU >= ``iou``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["detection_agreement"]


def _overlap(box: np.ndarray, boxes: np.ndarray, tolerance: float) -> np.ndarray:
    """IoU of one ``[4]`` box (ymin, xmin, ymax, xmax) with ``[N, 4]`` boxes.

    A pair with a zero-area box (detections clipped at the image border) has no meaningful IoU: it
    counts 1 when every coordinate agrees within ``tolerance``, else 0.
    """
    y0 = np.maximum(box[0], boxes[:, 0])
    x0 = np.maximum(box[1], boxes[:, 1])
    y1 = np.minimum(box[2], boxes[:, 2])
    x1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    iou = inter / np.where(union > 0, union, 1)
    close = (np.abs(boxes - box).max(axis=1) <= tolerance).astype(np.float64)
    return np.where((area > 0) & (areas > 0), iou, close)


def _top(out: Mapping[str, Any], top_k: int, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
    scores = np.asarray(out["detection_scores"])[0][:n]
    keep = np.flatnonzero(scores >= min_score)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:top_k]
    return (np.asarray(out["detection_boxes"])[0][keep], scores[keep],
            np.rint(np.asarray(out["detection_classes"])[0][keep]).astype(np.int64))


def detection_agreement(
    reference: Mapping[str, Any],
    candidate: Mapping[str, Any],
    *,
    top_k: int = 20,
    min_score: float = 0.0,
    iou: float = 0.5,
    tolerance: float = 0.01,
) -> dict[str, Any]:
    """Agreement of ``candidate``'s detections with ``reference``'s on one image.

    Returns ``matched`` (fraction of the reference's top ``top_k`` detections scoring ``>= min_score``
    that have a same-class candidate at IoU >= ``iou``; zero-area boxes match when their coordinates
    agree within ``tolerance``), ``same_order`` (fraction whose class and box
    (IoU >= 0.99) sit at the same rank), ``mean_iou`` of the matches, ``max_score_diff`` over the
    matches, and ``compared`` (how many reference detections were compared).
    """
    ref_boxes, ref_scores, ref_classes = _top(reference, top_k, min_score)
    cand_boxes, cand_scores, cand_classes = _top(candidate, top_k * 2, 0.0)
    used = np.zeros(len(cand_scores), bool)
    ious: list[float] = []
    score_diffs: list[float] = []
    for box, score, cls in zip(ref_boxes, ref_scores, ref_classes):
        if not len(cand_scores):
            break
        overlap = np.where((cand_classes == cls) & ~used, _overlap(box, cand_boxes, tolerance), -1.0)
        best = int(np.argmax(overlap))
        if overlap[best] >= iou:
            used[best] = True
            ious.append(float(overlap[best]))
            score_diffs.append(abs(float(cand_scores[best]) - float(score)))
    same = 0
    for i, (box, cls) in enumerate(zip(ref_boxes, ref_classes)):
        if i < len(cand_scores) and cand_classes[i] == cls and _overlap(box, cand_boxes[i : i + 1], tolerance)[0] >= 0.99:
            same += 1
    compared = len(ref_scores)
    return {
        "compared": compared,
        "matched": len(ious) / compared if compared else 1.0,
        "same_order": same / compared if compared else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "max_score_diff": max(score_diffs) if score_diffs else None,
    }
