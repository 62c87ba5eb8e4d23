"""Exact conversions between odzoo detections and COCO results.

Box conventions:

* COCO results and annotations: ``[x, y, width, height]`` in absolute pixels.
* ``Detections.boxes``: ``(x_min, y_min, x_max, y_max)`` absolute pixels.
* ``Detections.boxes_normalized`` (the zoo's): ``(y_min, x_min, y_max, x_max)`` in [0, 1].

Category mapping, model label ids -> dataset category ids (see :func:`category_mapping`):

* by id, when the model's label map is the COCO label map and every dataset category carries the
  COCO id of its name (the real COCO annotations, or any subset of them);
* by name otherwise: a model class and a dataset category match when their names are equal after
  lower-casing and treating ``_``/``-``/spaces alike. Model classes without a dataset counterpart
  are left out of the results.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..detections import Detections
from ..errors import DatasetError
from ..labels import COCO_LABELS


# ----------------------------------------------------------------------------- boxes
def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """``(x0, y0, x1, y1)`` -> ``(x, y, w, h)``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """``(x, y, w, h)`` -> ``(x0, y0, x1, y1)``."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]], axis=1)


def normalized_to_absolute(boxes_normalized: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Zoo ``(ymin, xmin, ymax, xmax)`` in [0, 1] -> absolute ``(x0, y0, x1, y1)`` for ``(height, width)``."""
    h, w = float(image_size[0]), float(image_size[1])
    b = np.asarray(boxes_normalized, np.float64).reshape(-1, 4)
    return b[:, [1, 0, 3, 2]] * np.array([w, h, w, h])


def absolute_to_normalized(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Absolute ``(x0, y0, x1, y1)`` -> zoo ``(ymin, xmin, ymax, xmax)`` in [0, 1] for ``(height, width)``."""
    h, w = float(image_size[0]), float(image_size[1])
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return b[:, [1, 0, 3, 2]] / np.array([h, w, h, w])


# ----------------------------------------------------------------------------- categories
def _norm_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name).strip().lower())


def is_coco_label_map(labels: Mapping[int, str]) -> bool:
    """True when every ``{id: name}`` entry is the COCO id of that COCO name."""
    return bool(labels) and all(COCO_LABELS.get(int(i)) == n for i, n in labels.items())


def category_mapping(model_labels: Mapping[int, str], dataset_categories: Mapping[int, str]) -> dict[int, int]:
    """``{model label id: dataset category id}`` (by id for COCO-on-COCO, by name otherwise).

    Raises :class:`DatasetError` when no model class matches any dataset category.
    """
    model = {int(k): str(v) for k, v in model_labels.items()}
    data = {int(k): str(v) for k, v in dataset_categories.items()}
    if is_coco_label_map(model) and is_coco_label_map(data):
        mapping = {i: i for i in model if i in data}
    else:
        by_name: dict[str, int] = {}
        for cid, name in data.items():
            by_name.setdefault(_norm_name(name), cid)
        mapping = {i: by_name[_norm_name(n)] for i, n in model.items() if _norm_name(n) in by_name}
    if not mapping:
        raise DatasetError(
            "no model class matches a dataset category: model has "
            f"{sorted(model.values())[:6]}..., dataset has {sorted(data.values())[:6]}...; "
            "evaluate on a dataset whose category names match the model's label map"
        )
    return mapping


# ----------------------------------------------------------------------------- detections -> results
def _mask_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray((np.asarray(mask) > 0.5).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def detections_to_coco(
    detections: Detections,
    image_id: Any,
    category_ids: Mapping[int, int] | None = None,
    *,
    keypoints: bool = True,
    masks: bool = True,
) -> list[dict]:
    """COCO results of one image: absolute ``bbox`` xywh, ``score``, dataset ``category_id``.

    ``category_ids`` maps model label ids to dataset ids (detections of unmapped classes are
    dropped). Keypoint models add ``keypoints`` ``[x, y, score] * K``; mask models add an RLE
    ``segmentation`` of the mask thresholded at 0.5.
    """
    from ..datasets.coco import id_kind

    if id_kind(image_id) is None:
        raise DatasetError(f"image_id must be an integer (or a non-empty string), got {image_id!r}")
    if category_ids is not None and not isinstance(category_ids, Mapping):
        raise DatasetError(f"category_ids must map model label ids to dataset ids, got {type(category_ids).__name__}")
    results = []
    for i in range(len(detections)):
        cls_id = int(detections.classes[i])
        if category_ids is not None:
            if cls_id not in category_ids:
                continue
            cls_id = int(category_ids[cls_id])
        x0, y0, x1, y1 = (float(v) for v in detections.boxes[i])
        item: dict[str, Any] = {
            "image_id": image_id,
            "category_id": cls_id,
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(detections.scores[i]),
        }
        if keypoints and detections.keypoints is not None:
            kp_scores = detections.keypoint_scores
            flat: list[float] = []
            for k, (kx, ky) in enumerate(detections.keypoints[i]):
                flat += [float(kx), float(ky), float(kp_scores[i][k]) if kp_scores is not None else 1.0]
            item["keypoints"] = flat
        if masks and detections.masks is not None:
            item["segmentation"] = _mask_rle(detections.masks[i])
        results.append(item)
    return results


def annotations_to_detections(
    annotations: Iterable[Mapping[str, Any]],
    image_size: tuple[int, int],
    labels: Mapping[int, str],
    *,
    scores: Iterable[float] | None = None,
) -> Detections:
    """Ground-truth annotations of one image as a :class:`Detections` (scores 1.0 unless given)."""
    anns = list(annotations)
    xyxy = xywh_to_xyxy(np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4))
    score = np.ones(len(anns), np.float32) if scores is None else np.asarray(list(scores), np.float32)
    return Detections(
        boxes=xyxy.astype(np.float32),
        boxes_normalized=absolute_to_normalized(xyxy, image_size).astype(np.float32),
        scores=score,
        classes=np.array([int(a["category_id"]) for a in anns], np.int64),
        labels=tuple(labels.get(int(a["category_id"]), f"class_{a['category_id']}") for a in anns),
        image_size=(int(image_size[0]), int(image_size[1])),
    )


# ----------------------------------------------------------------------------- files
def write_results(results: list[dict], path: str | Path) -> Path:
    """Write COCO results as JSON."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results), encoding="utf-8")
    return out


def load_results(path: str | Path) -> list[dict]:
    """Read and check a COCO results JSON file (a list of detections)."""
    from ..datasets.json_file import read_json

    data = read_json(path, what="detections file", expect=list,
                     hint="pass a COCO results JSON file (a list of {image_id, category_id, bbox, score})")
    validate_results(data, str(path))
    return data


def validate_results(results: Any, source: str = "results") -> None:
    """Check the structure of COCO results; the first bad record is named by index and field."""
    from ..datasets.coco import check_box, check_keypoints, id_kind, is_integer, is_number

    if not isinstance(results, (list, tuple)):
        raise DatasetError(f"{source}: COCO results are a list of detections, not {type(results).__name__}")
    for i, det in enumerate(results):
        where = f"{source}: results[{i}]"
        if not isinstance(det, Mapping):
            raise DatasetError(f"{where} must be an object, got {type(det).__name__}")
        missing = [k for k in ("image_id", "category_id", "score") if k not in det]
        if missing:
            raise DatasetError(f"{where} lacks {', '.join(missing)}")
        if "bbox" not in det and "keypoints" not in det and "segmentation" not in det:
            raise DatasetError(f"{where} has neither bbox, keypoints nor segmentation")
        if id_kind(det["image_id"]) is None:
            raise DatasetError(f"{where}.image_id must be an integer (or a string), got {det['image_id']!r}")
        if not is_integer(det["category_id"]):
            raise DatasetError(f"{where}.category_id must be an integer, got {det['category_id']!r}")
        if not is_number(det["score"]):
            raise DatasetError(f"{where}.score must be a finite number, got {det['score']!r}")
        if "bbox" in det:
            check_box(det["bbox"], where)
        if "keypoints" in det:
            check_keypoints(det["keypoints"], where)
        if "segmentation" in det:
            seg = det["segmentation"]
            rle = isinstance(seg, Mapping) and "size" in seg and "counts" in seg
            polygons = isinstance(seg, list) and all(
                isinstance(p, list) and all(is_number(v) for v in p) for p in seg)
            if not (rle or polygons):
                raise DatasetError(f"{where}.segmentation must be an RLE {{size, counts}} or a list of polygons")
