"""Tiny, honest detectors for the benchmark tests, and checks that they behave.

* ``ColourDetector`` finds the shapes of the synthetic dataset by colour thresholding and
  connected components (no knowledge of the annotations).
* ``TruthDetector`` returns the ground truth of the image it is given (looked up by the image's
  bytes), optionally perturbed by a deterministic rule.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.datasets.synthetic import SHAPE_COLORS
from zoo.detections import Detections
from zoo.eval.coco_results import annotations_to_detections
from zoo.registry import Published, list_models

SHAPE_LABELS = {1: "circle", 2: "square", 3: "triangle"}


def tiny_spec(name: str, *, box_map: float | None = 90.0, speed_ms: float | None = 5.0):
    """A real ModelSpec for a 3-class shapes detector."""
    base = list_models()[0]
    return dataclasses.replace(
        base, name=name, display_name=name, aliases=(), family="shapes", label_map=dict(SHAPE_LABELS),
        num_classes=3, outputs=("boxes",), published=Published(box_map=box_map, speed_ms=speed_ms),
    )


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the 4-connected components of ``mask`` (label propagation)."""
    h, w = mask.shape
    big = h * w + 1
    labels = np.where(mask, np.arange(h * w).reshape(h, w), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neigh = np.minimum.reduce([labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]])
        neigh = np.where(mask, neigh, big)
        if np.array_equal(neigh, labels):
            break
        labels = neigh
    return [labels == v for v in np.unique(labels[mask])]


class ColourDetector:
    """Finds red circles, green squares and blue triangles by their chromaticity."""

    backend = "numpy"

    def __init__(self, name: str = "tiny_colour") -> None:
        self.spec = tiny_spec(name)

    def _find(self, image: np.ndarray) -> Detections:
        img = image.astype(np.float32)
        chroma = img / np.maximum(img.sum(-1, keepdims=True), 1.0)
        boxes, scores, classes = [], [], []
        for cid, name in SHAPE_LABELS.items():
            base = np.array(SHAPE_COLORS[name], np.float32)
            on = np.abs(chroma - base / base.sum()).max(-1) < 0.06
            for comp in _components(on):
                ys, xs = np.nonzero(comp)
                if ys.size < 20:
                    continue
                x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
                boxes.append([y0 / image.shape[0], x0 / image.shape[1], y1 / image.shape[0], x1 / image.shape[1]])
                scores.append(min(1.0, ys.size / float((x1 - x0) * (y1 - y0))))
                classes.append(cid)
        order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
        return Detections.from_normalized(
            np.asarray(boxes, np.float32).reshape(-1, 4)[order], np.asarray(scores, np.float32)[order],
            np.asarray(classes, np.int64)[order], image.shape[:2], label_map=SHAPE_LABELS)

    def detect(self, images: Any, *, score_threshold: float = 0.0, max_detections: int | None = None) -> Any:
        if isinstance(images, (list, tuple)):
            return [self.detect(i, score_threshold=score_threshold, max_detections=max_detections) for i in images]
        return self._find(np.asarray(images)).filter(score_threshold, max_detections)

    def timed_detect(self, image: np.ndarray) -> tuple[Detections, dict[str, float]]:
        t0 = time.perf_counter()
        arr = np.asarray(image)
        t1 = time.perf_counter()
        dets = self._find(arr)
        t2 = time.perf_counter()
        dets = dets.filter(0.0, 100)
        t3 = time.perf_counter()
        return dets, {"preprocess_s": t1 - t0, "inference_s": t2 - t1, "postprocess_s": t3 - t2}


Perturb = Callable[[int, list[dict]], list[tuple[dict, float]]]


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class TruthDetector:
    """Returns each image's ground truth, transformed by ``perturb(image_id, anns) -> [(ann, score)]``."""

    backend = "numpy"

    def __init__(self, dataset: CocoDataset, perturb: Perturb | None = None, name: str = "tiny_truth") -> None:
        self.spec = tiny_spec(name, box_map=100.0, speed_ms=1.0)
        self._truth = {image_key(img): (i, anns) for i, img, anns in dataset}
        self._perturb = perturb or (lambda _i, anns: [(a, 1.0) for a in anns])

    def detect(self, images: Any, *, score_threshold: float = 0.0, max_detections: int | None = None) -> Any:
        if isinstance(images, (list, tuple)):
            return [self.detect(i, score_threshold=score_threshold, max_detections=max_detections) for i in images]
        image = np.asarray(images)
        image_id, anns = self._truth[image_key(image)]
        pairs = self._perturb(image_id, anns)
        dets = annotations_to_detections([a for a, _ in pairs], image.shape[:2], SHAPE_LABELS,
                                         scores=[s for _, s in pairs])
        return dets.filter(score_threshold, max_detections)


@pytest.fixture(scope="session")
def shapes_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("bench_shapes"), 6, seed=5, image_size=(96, 96), max_objects=3)


def test_colour_detector_finds_the_shapes(shapes_small: Path) -> None:
    ds = CocoDataset(shapes_small / "annotations.json", shapes_small / "images")
    det = ColourDetector()
    found = total = 0
    for _, image, anns in ds:
        out = det.detect(image)
        assert isinstance(out, Detections)
        for ann in anns:
            total += 1
            x, y, w, h = ann["bbox"]
            hits = [i for i in range(len(out)) if int(out.classes[i]) == ann["category_id"]
                    and np.allclose(out.boxes[i], [x, y, x + w, y + h], atol=2.0)]
            found += bool(hits)
    assert found >= total - 1


def test_truth_detector_returns_the_annotations(shapes_small: Path) -> None:
    ds = CocoDataset(shapes_small / "annotations.json", shapes_small / "images")
    det = TruthDetector(ds)
    image_id, image, anns = next(iter(ds))
    out = det.detect([image])[0]
    np.testing.assert_allclose(out.boxes[:, :2], [a["bbox"][:2] for a in anns])
    assert out.labels == tuple(SHAPE_LABELS[a["category_id"]] for a in anns)


def jitter_truth(image_id: int, anns: list[dict]) -> list[tuple[dict, float]]:
    """A deterministic perturbation: shift some boxes, drop one in five, relabel one in seven, add a duplicate."""
    out = []
    for k, ann in enumerate(anns):
        n = image_id * 10 + k
        if n % 5 == 0:
            continue
        a = dict(ann, bbox=list(ann["bbox"]))
        a["bbox"][0] += (n % 4) * 0.12 * a["bbox"][2]
        if n % 7 == 0:
            a["category_id"] = a["category_id"] % 3 + 1
        score = 0.3 + 0.6 * ((n * 37) % 11) / 10
        out.append((a, score))
        if n % 3 == 0:
            out.append((dict(a, bbox=[v + 2.0 for v in a["bbox"]]), score / 2))
    return out
