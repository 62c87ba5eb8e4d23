"""The one output contract of every odzoo detector: :class:`Detections`.

One ``Detections`` describes one image. Every backend and every model family returns exactly this,
so code written against one zoo model works with all of them:

==================  =================  ======================================================
field               shape / dtype      meaning
==================  =================  ======================================================
boxes               [N, 4] float32     absolute pixels ``(x_min, y_min, x_max, y_max)``
boxes_normalized    [N, 4] float32     ``(y_min, x_min, y_max, x_max)`` in [0, 1], as the zoo
scores              [N] float32        descending
classes             [N] int64          label ids (COCO ids 1-90 for COCO models)
labels              tuple of N str     class names
image_size          (height, width)    of the image as given to ``detect``
keypoints           [N, K, 2] float32  absolute pixels ``(x, y)``; None without keypoints
keypoints_normalized[N, K, 2] float32  ``(y, x)`` in [0, 1], as the zoo; None without keypoints
keypoint_scores     [N, K] float32     None without keypoints
masks               [N, H, W] float32  instance masks in image pixels (probabilities); None without
==================  =================  ======================================================
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import validate
from .errors import ArgumentError, InputError
from .labels import PERSON_KEYPOINT_EDGES, label_name


@dataclasses.dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image. See the module docstring for the contract."""

    boxes: np.ndarray
    boxes_normalized: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    labels: tuple[str, ...]
    image_size: tuple[int, int]
    keypoints: np.ndarray | None = None
    keypoints_normalized: np.ndarray | None = None
    keypoint_scores: np.ndarray | None = None
    masks: np.ndarray | None = None

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_normalized(
        cls,
        boxes_normalized: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        image_size: tuple[int, int],
        *,
        label_map: Mapping[int, str] | None = None,
        keypoints_normalized: np.ndarray | None = None,
        keypoint_scores: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> Detections:
        """Build from zoo-style outputs: normalized ``(ymin, xmin, ymax, xmax)``, label ids."""
        height, width = int(image_size[0]), int(image_size[1])
        norm = np.clip(np.asarray(boxes_normalized, np.float32).reshape(-1, 4), 0.0, 1.0)
        scale = np.array([width, height, width, height], np.float32)
        boxes = norm[:, [1, 0, 3, 2]] * scale
        classes = np.asarray(classes).astype(np.int64).reshape(-1)
        table = dict(label_map) if label_map is not None else None
        labels = tuple(label_name(c, table) for c in classes)
        kp_abs = None
        kp_norm = None
        if keypoints_normalized is not None:
            kp_norm = np.asarray(keypoints_normalized, np.float32)
            kp_abs = np.stack([kp_norm[..., 1] * width, kp_norm[..., 0] * height], axis=-1)
        return cls(
            boxes=boxes.astype(np.float32),
            boxes_normalized=norm,
            scores=np.asarray(scores, np.float32).reshape(-1),
            classes=classes,
            labels=labels,
            image_size=(height, width),
            keypoints=kp_abs,
            keypoints_normalized=kp_norm,
            keypoint_scores=None if keypoint_scores is None else np.asarray(keypoint_scores, np.float32),
            masks=None if masks is None else np.asarray(masks, np.float32),
        )

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select detections with an index, slice, boolean mask or index array."""
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return dataclasses.replace(
            self,
            boxes=self.boxes[idx],
            boxes_normalized=self.boxes_normalized[idx],
            scores=self.scores[idx],
            classes=self.classes[idx],
            labels=tuple(self.labels[i] for i in idx),
            keypoints=pick(self.keypoints),
            keypoints_normalized=pick(self.keypoints_normalized),
            keypoint_scores=pick(self.keypoint_scores),
            masks=pick(self.masks),
        )

    def filter(self, score_threshold: float = 0.0, max_detections: int | None = None) -> Detections:
        """Keep detections scoring at least ``score_threshold`` (in [0, 1]), at most ``max_detections``
        (>= 1, None for all) of them."""
        score_threshold, max_detections = check_filter_arguments(score_threshold, max_detections)
        keep = np.flatnonzero(self.scores >= score_threshold)
        keep = keep[np.argsort(-self.scores[keep], kind="stable")]
        if max_detections is not None:
            keep = keep[:max_detections]
        return self[keep]

    # ----------------------------------------------------------------- conversions
    def to_coco(self, image_id: int, *, category_ids: Mapping[int, int] | None = None) -> list[dict]:
        """COCO results: ``{"image_id", "category_id", "bbox": [x, y, w, h] absolute, "score"}``.

        ``category_ids`` maps this model's label ids to the dataset's, when they differ.
        Keypoint models add ``"keypoints"`` as ``[x, y, v] * K`` with ``v`` the keypoint score.
        """
        image_id = validate.integer(image_id, "image_id")
        if category_ids is not None:
            category_ids = _check_category_ids(category_ids)
        out = []
        for i in range(len(self)):
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            cls_id = int(self.classes[i])
            if category_ids is not None:
                if cls_id not in category_ids:
                    continue
                cls_id = int(category_ids[cls_id])
            item = {
                "image_id": image_id,
                "category_id": cls_id,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(self.scores[i]),
            }
            if self.keypoints is not None and self.keypoint_scores is not None:
                kps = []
                for (kx, ky), ks in zip(self.keypoints[i], self.keypoint_scores[i]):
                    kps += [float(kx), float(ky), float(ks)]
                item["keypoints"] = kps
            out.append(item)
        return out

    def to_dict(self) -> dict:
        """Plain JSON-ready data (lists and numbers); masks are left out."""
        data: dict[str, Any] = {
            "image_size": list(self.image_size),
            "boxes": self.boxes.tolist(),
            "boxes_normalized": self.boxes_normalized.tolist(),
            "scores": self.scores.tolist(),
            "classes": self.classes.tolist(),
            "labels": list(self.labels),
        }
        if self.keypoints is not None:
            data["keypoints"] = self.keypoints.tolist()
            data["keypoint_scores"] = None if self.keypoint_scores is None else self.keypoint_scores.tolist()
        return data

    def to_json(self, **kwargs: Any) -> str:
        """``to_dict()`` as JSON text."""
        return json.dumps(self.to_dict(), **kwargs)

    def __repr__(self) -> str:
        head = ", ".join(f"{lbl} {s:.2f}" for lbl, s in zip(self.labels[:3], self.scores[:3]))
        more = "" if len(self) <= 3 else ", ..."
        return f"Detections(n={len(self)}, image_size={self.image_size}, [{head}{more}])"

    # ----------------------------------------------------------------- drawing
    def draw(
        self,
        image: np.ndarray,
        *,
        score_threshold: float = 0.3,
        keypoint_threshold: float = 0.3,
        edges: Sequence[tuple[int, int]] = PERSON_KEYPOINT_EDGES,
    ) -> np.ndarray:
        """Return a copy of ``image`` with boxes, labels, keypoints and masks drawn, as HxWx3 uint8.

        ``image`` is the picture these detections were computed on (``image_size``), in any form
        :func:`zoo.images.to_rgb_uint8` accepts (uint8 RGB, grayscale, RGBA, 16-bit, floats in [0, 1]).
        """
        from PIL import Image, ImageDraw

        from .images import to_rgb_uint8

        score_threshold = validate.probability(score_threshold, "score_threshold")
        keypoint_threshold = validate.probability(keypoint_threshold, "keypoint_threshold")
        edges = _check_edges(edges)
        if isinstance(image, (str, bytes)) or image is None:
            raise InputError(f"draw() takes the image as an array (HxWx3 uint8), not {type(image).__name__}; "
                             "read files with zoo.images.load_image")
        base = to_rgb_uint8(image, what="the image to draw on")
        if tuple(base.shape[:2]) != tuple(self.image_size):
            raise InputError(
                f"the image to draw on is {base.shape[0]}x{base.shape[1]} (HxW) but these detections are for a "
                f"{self.image_size[0]}x{self.image_size[1]} image; draw on the image given to detect()")
        shown = self.filter(score_threshold)
        if shown.masks is not None and len(shown):
            base = base.copy()
            for i, mask in enumerate(shown.masks):
                color = np.array(_color(int(shown.classes[i])), np.float32)
                on = mask > 0.5
                base[on] = (0.5 * base[on] + 0.5 * color).astype(np.uint8)
        canvas = Image.fromarray(base)
        pen = ImageDraw.Draw(canvas)
        for i in range(len(shown)):
            color = _color(int(shown.classes[i]))
            x0, y0, x1, y1 = (float(v) for v in shown.boxes[i])
            pen.rectangle([x0, y0, x1, y1], outline=color, width=2)
            text = f"{shown.labels[i]} {shown.scores[i]:.2f}"
            pen.rectangle([x0, max(0.0, y0 - 11), x0 + 6 * len(text) + 4, max(11.0, y0)], fill=color)
            pen.text((x0 + 2, max(0.0, y0 - 11)), text, fill=(0, 0, 0))
            if shown.keypoints is not None and shown.keypoint_scores is not None:
                pts, vis = shown.keypoints[i], shown.keypoint_scores[i] >= keypoint_threshold
                for a, b in edges:
                    if a < len(pts) and b < len(pts) and vis[a] and vis[b]:
                        pen.line([tuple(pts[a]), tuple(pts[b])], fill=color, width=2)
                for (kx, ky), ok in zip(pts, vis):
                    if ok:
                        pen.ellipse([kx - 2, ky - 2, kx + 2, ky + 2], fill=color)
        return np.asarray(canvas)


def check_filter_arguments(score_threshold: Any, max_detections: Any) -> tuple[float, int | None]:
    """``(score_threshold, max_detections)`` checked: a finite number in [0, 1], and None or >= 1."""
    return (validate.probability(score_threshold, "score_threshold"),
            validate.optional_integer(max_detections, "max_detections", minimum=1))


def _check_category_ids(category_ids: Any) -> dict[int, int]:
    if not isinstance(category_ids, Mapping):
        raise ArgumentError(f"category_ids must map model label ids to dataset ids, got {type(category_ids).__name__}")
    return {validate.integer(k, "category_ids key"): validate.integer(v, f"category_ids[{k!r}]")
            for k, v in category_ids.items()}


def _check_edges(edges: Any) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(edge) for edge in edges]
    except TypeError:
        raise ArgumentError(f"edges must be a list of (keypoint, keypoint) index pairs, got {edges!r}") from None
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ArgumentError(f"edges[{i}] must be a pair of keypoint indices, got {pair!r}")
        out.append((validate.integer(pair[0], f"edges[{i}][0]", minimum=0),
                    validate.integer(pair[1], f"edges[{i}][1]", minimum=0)))
    return out


def _color(class_id: int) -> tuple[int, int, int]:
    """A stable, bright colour per class id."""
    rng = np.random.RandomState(class_id * 7919 + 17)
    return tuple(int(v) for v in rng.randint(80, 256, size=3))  # type: ignore[return-value]
