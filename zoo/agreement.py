"""How closely one run's detections reproduce another's on the same image.

Used to measure what an option costs (float16, XLA, an exported or quantized model) against the
float32 Keras model. Each reference detection scoring at least ``min_score`` (best first, at most
``top_k``) is paired with the unused candidate detection of the same class that overlaps it most
(IoU >= ``iou``). Two zero-area boxes (detections clipped at the image border) have no meaningful
IoU: they count as overlapping fully when every coordinate agrees within ``tolerance``.

:func:`compare_detections` takes two :class:`~zoo.detections.Detections` (pixel boxes);
:func:`detection_agreement` two serving-style output dicts (``[1, N, 4]`` normalized boxes);
:func:`measure_agreement` runs two detectors over images; :func:`at_parity` says whether a float
export reproduces its model (every detection found, boxes within 1 px, scores within 1e-3 relative).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .detections import Detections

__all__ = ["at_parity", "compare_detections", "detection_agreement", "match_detections", "measure_agreement"]

#: parity limits for float exports
BOX_TOLERANCE_PX = 1.0
SCORE_TOLERANCE_REL = 1e-3


def _overlap(box: np.ndarray, boxes: np.ndarray, tolerance: float) -> np.ndarray:
    """IoU of one ``[4]`` box with ``[N, 4]`` boxes, both (lo0, lo1, hi0, hi1) in the same order."""
    lo0 = np.maximum(box[0], boxes[:, 0])
    lo1 = np.maximum(box[1], boxes[:, 1])
    hi0 = np.minimum(box[2], boxes[:, 2])
    hi1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(hi0 - lo0, 0, None) * np.clip(hi1 - lo1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    iou = inter / np.where(union > 0, union, 1.0)
    close = (np.abs(boxes - box).max(axis=1) <= tolerance).astype(np.float64)
    return np.where((area > 0) & (areas > 0), iou, close)


def match_detections(
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    min_score: float = 0.0,
    iou: float = 0.5,
    top_k: int | None = None,
    tolerance: float = 0.0,
) -> dict[str, Any]:
    """Agreement of ``candidate`` with ``reference``, each ``(boxes [N, 4], scores [N], classes [N])``.

    Returns ``compared`` (reference detections considered), ``matched`` (fraction with a same-class
    candidate at IoU >= ``iou``), ``same_order`` (fraction whose class and box, IoU >= 0.99, sit at
    the same rank), ``mean_iou`` of the matches, and over the matches ``max_box_diff`` (largest
    coordinate difference, in the boxes' unit), ``max_score_diff`` and ``max_score_rel`` (relative
    to the reference score).
    """
    def ranked(boxes: Any, scores: Any, classes: Any, floor: float, limit: int | None):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        classes = np.rint(np.asarray(classes, np.float64).reshape(-1)).astype(np.int64)
        keep = np.flatnonzero(scores >= floor)
        keep = keep[np.argsort(-scores[keep], kind="stable")][:limit]
        return boxes[keep], scores[keep], classes[keep]

    ref_boxes, ref_scores, ref_classes = ranked(*reference, min_score, top_k)
    cand_boxes, cand_scores, cand_classes = ranked(*candidate, -np.inf, None if top_k is None else 2 * top_k)
    used = np.zeros(len(cand_scores), bool)
    ious: list[float] = []
    box_diff: list[float] = []
    score_diff: list[float] = []
    score_rel: list[float] = []
    for box, score, cls in zip(ref_boxes, ref_scores, ref_classes):
        if not len(cand_scores):
            break
        overlap = np.where((cand_classes == cls) & ~used, _overlap(box, cand_boxes, tolerance), -1.0)
        best = int(np.argmax(overlap))
        if overlap[best] < iou:
            continue
        used[best] = True
        ious.append(float(overlap[best]))
        box_diff.append(float(np.abs(cand_boxes[best] - box).max()))
        score_diff.append(abs(float(cand_scores[best]) - float(score)))
        score_rel.append(score_diff[-1] / max(abs(float(score)), 1e-12))
    same = sum(1 for i, (box, cls) in enumerate(zip(ref_boxes, ref_classes))
               if i < len(cand_scores) and cand_classes[i] == cls
               and _overlap(box, cand_boxes[i:i + 1], tolerance)[0] >= 0.99)
    compared = len(ref_scores)
    return {
        "compared": compared,
        "matched": len(ious) / compared if compared else 1.0,
        "same_order": same / compared if compared else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else None,
        "max_box_diff": max(box_diff) if box_diff else None,
        "max_score_diff": max(score_diff) if score_diff else None,
        "max_score_rel": max(score_rel) if score_rel else None,
    }


def compare_detections(reference: Detections, candidate: Detections, *, min_score: float = 0.1,
                       iou: float = 0.5) -> dict[str, Any]:
    """:func:`match_detections` of two :class:`~zoo.detections.Detections` of one image; box
    differences in pixels (``max_box_px``)."""
    result = match_detections((reference.boxes, reference.scores, reference.classes),
                              (candidate.boxes, candidate.scores, candidate.classes),
                              min_score=min_score, iou=iou, tolerance=BOX_TOLERANCE_PX)
    result["max_box_px"] = result.pop("max_box_diff")
    return result


def detection_agreement(reference: Mapping[str, Any], candidate: Mapping[str, Any], *, top_k: int = 20,
                        min_score: float = 0.0, iou: float = 0.5, tolerance: float = 0.01) -> dict[str, Any]:
    """:func:`match_detections` of two serving-style output dicts of one image (the first image of
    ``[1, N, 4]`` normalized boxes, ``[1, N]`` scores and classes, ``num_detections``), over the
    reference's ``top_k`` best detections."""
    def first_image(out: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
        return tuple(np.asarray(out[key])[0][:n] for key in
                     ("detection_boxes", "detection_scores", "detection_classes"))  # type: ignore[return-value]

    return match_detections(first_image(reference), first_image(candidate), min_score=min_score, iou=iou,
                            top_k=top_k, tolerance=tolerance)


def measure_agreement(reference: Any, candidate: Any, images: Iterable[Any], *, min_score: float = 0.1,
                      iou: float = 0.5) -> dict[str, Any]:
    """Agreement of two detectors over ``images``: per-image :func:`compare_detections` summarised
    (``images``, ``compared``, worst ``matched``, ``same_order`` and ``mean_iou``, largest
    ``max_box_px`` and ``max_score_rel``), plus ``parity`` (:func:`at_parity`)."""
    results = [compare_detections(reference.detect(image), candidate.detect(image), min_score=min_score, iou=iou)
               for image in images]

    def worst(key: str, pick: Any) -> Any:
        values = [r[key] for r in results if r[key] is not None]
        return pick(values) if values else None

    summary = {
        "images": len(results),
        "compared": sum(r["compared"] for r in results),
        "matched": worst("matched", min),
        "same_order": worst("same_order", min),
        "mean_iou": worst("mean_iou", min),
        "max_box_px": worst("max_box_px", max),
        "max_score_rel": worst("max_score_rel", max),
    }
    summary["parity"] = at_parity(summary)
    return summary


def at_parity(agreement: Mapping[str, Any]) -> bool:
    """Every reference detection found, boxes within 1 px and scores within 1e-3 relative."""
    if agreement.get("matched") != 1.0:
        return False
    px, rel = agreement.get("max_box_px"), agreement.get("max_score_rel")
    return (px is None or px <= BOX_TOLERANCE_PX) and (rel is None or rel <= SCORE_TOLERANCE_REL)
