"""CenterNet training targets, computed per image in numpy.

All geometry is in *output-grid* units: a box given in normalized ``(ymin, xmin, ymax, xmax)``
coordinates of the (resized, padded) network input is scaled by the output grid size
``(out_h, out_w)`` = input size / stride.

For every object the centre ``(cy, cx)`` falls into grid cell ``(floor(cy), floor(cx))``; that cell
receives

* a Gaussian peak (value 1 at the cell) in the heatmap channel of the object's class, with a
  standard deviation that depends on the box size: the radius within which a box shifted by that
  much still overlaps the original with IoU >= ``min_overlap`` (the CornerNet rule), then
  ``sigma = (2 * floor(radius) + 1) / 6``; overlapping Gaussians of one class keep the maximum;
* a size target ``(height, width)`` and an offset target ``(cy - floor(cy), cx - floor(cx))``
  stored sparsely: ``indices`` ``[max_boxes, 2]`` (row, col), ``weights`` ``[max_boxes]``.

Keypoints (optional) get per-keypoint-type heatmaps, a sub-cell offset at each keypoint's cell and a
regression vector from the object's centre cell to the keypoint.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class CenterNetTargets:
    """Targets of one image (see the module docstring)."""

    heatmap: np.ndarray          # [out_h, out_w, num_classes] float32 in [0, 1]
    indices: np.ndarray          # [max_boxes, 2] int32 (row, col) of each object's centre cell
    scale: np.ndarray            # [max_boxes, 2] float32 (height, width) in grid units
    offset: np.ndarray           # [max_boxes, 2] float32 (dy, dx) in [0, 1)
    weights: np.ndarray          # [max_boxes] float32, 1 for real objects, 0 for padding
    keypoint_heatmap: np.ndarray | None = None   # [out_h, out_w, K]
    keypoint_indices: np.ndarray | None = None   # [max_boxes, K, 2] int32 cell of each keypoint
    keypoint_offset: np.ndarray | None = None    # [max_boxes, K, 2] sub-cell offset (dy, dx)
    keypoint_regression: np.ndarray | None = None  # [max_boxes, K, 2] keypoint - centre cell (dy, dx)
    keypoint_weights: np.ndarray | None = None   # [max_boxes, K] 1 where the keypoint is visible

    def as_dict(self) -> dict[str, np.ndarray]:
        """The non-empty fields by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}


def gaussian_radius(height: np.ndarray, width: np.ndarray, min_overlap: float = 0.7) -> np.ndarray:
    """Largest centre shift (grid units) that keeps IoU >= ``min_overlap`` for boxes of this size.

    The smallest positive root over the three ways a shifted box can overlap the original
    (both corners move in, both move out, one in one out).
    """
    h = np.asarray(height, np.float64)
    w = np.asarray(width, np.float64)
    o = float(min_overlap)
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + np.sqrt(np.maximum(b1 ** 2 - 4 * c1, 0.0))) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + np.sqrt(np.maximum(b2 ** 2 - 16 * c2, 0.0))) / 2
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + np.sqrt(np.maximum(b3 ** 2 - 4 * a3 * c3, 0.0))) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def gaussian_sigma(height: np.ndarray, width: np.ndarray, min_overlap: float = 0.7) -> np.ndarray:
    """Standard deviation of an object's heatmap peak: ``(2 * floor(radius) + 1) / 6``."""
    radius = np.maximum(np.floor(gaussian_radius(height, width, min_overlap)), 0.0)
    return (2.0 * radius + 1.0) / 6.0


def draw_gaussian(heatmap: np.ndarray, row: int, col: int, sigma: float) -> None:
    """Max-blend a unit Gaussian centred on cell ``(row, col)`` into a 2-D ``heatmap`` in place."""
    out_h, out_w = heatmap.shape
    reach = int(np.ceil(3.0 * sigma))
    r0, r1 = max(0, row - reach), min(out_h, row + reach + 1)
    c0, c1 = max(0, col - reach), min(out_w, col + reach + 1)
    if r0 >= r1 or c0 >= c1:
        return
    ys = np.arange(r0, r1, dtype=np.float64)[:, None] - row
    xs = np.arange(c0, c1, dtype=np.float64)[None, :] - col
    patch = np.exp(-(ys ** 2 + xs ** 2) / (2.0 * sigma ** 2)).astype(np.float32)
    np.maximum(heatmap[r0:r1, c0:c1], patch, out=heatmap[r0:r1, c0:c1])


def center_targets(
    boxes: np.ndarray,
    classes: np.ndarray,
    output_size: tuple[int, int],
    num_classes: int,
    *,
    max_boxes: int = 100,
    min_overlap: float = 0.7,
    keypoints: np.ndarray | None = None,
    keypoint_visibility: np.ndarray | None = None,
    keypoint_sigma: np.ndarray | None = None,
) -> CenterNetTargets:
    """Targets for one image.

    ``boxes`` ``[N, 4]`` normalized ``(ymin, xmin, ymax, xmax)`` of the network input; ``classes``
    ``[N]`` 0-based class indices; ``output_size`` ``(out_h, out_w)`` of the head's grid.
    Boxes of zero size, outside the image or of a class outside ``[0, num_classes)`` are ignored;
    at most ``max_boxes`` are kept. ``keypoints`` ``[N, K, 2]`` normalized ``(y, x)`` with
    ``keypoint_visibility`` ``[N, K]`` (bool) add keypoint targets; ``keypoint_sigma`` ``[K]``
    scales each keypoint type's Gaussian relative to the object's (default 1).
    """
    out_h, out_w = int(output_size[0]), int(output_size[1])
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes, np.int64).reshape(-1)
    heatmap = np.zeros((out_h, out_w, int(num_classes)), np.float32)
    indices = np.zeros((max_boxes, 2), np.int32)
    scale = np.zeros((max_boxes, 2), np.float32)
    offset = np.zeros((max_boxes, 2), np.float32)
    weights = np.zeros((max_boxes,), np.float32)

    with_kp = keypoints is not None
    if with_kp:
        kps = np.asarray(keypoints, np.float64)
        num_kp = kps.shape[1]
        vis = (np.ones(kps.shape[:2], bool) if keypoint_visibility is None
               else np.asarray(keypoint_visibility, bool).reshape(kps.shape[:2]))
        kp_sigma = np.ones(num_kp) if keypoint_sigma is None else np.asarray(keypoint_sigma, np.float64)
        kp_heatmap = np.zeros((out_h, out_w, num_kp), np.float32)
        kp_indices = np.zeros((max_boxes, num_kp, 2), np.int32)
        kp_offset = np.zeros((max_boxes, num_kp, 2), np.float32)
        kp_regression = np.zeros((max_boxes, num_kp, 2), np.float32)
        kp_weights = np.zeros((max_boxes, num_kp), np.float32)

    grid = np.array([out_h, out_w, out_h, out_w], np.float64)
    slot = 0
    for i in range(boxes.shape[0]):
        if slot >= max_boxes:
            break
        cls = int(classes[i])
        ymin, xmin, ymax, xmax = np.clip(boxes[i], 0.0, 1.0) * grid
        h, w = ymax - ymin, xmax - xmin
        if not (0 <= cls < num_classes) or h <= 0 or w <= 0:
            continue
        cy, cx = (ymin + ymax) / 2.0, (xmin + xmax) / 2.0
        row, col = min(int(np.floor(cy)), out_h - 1), min(int(np.floor(cx)), out_w - 1)
        sigma = float(gaussian_sigma(h, w, min_overlap))
        draw_gaussian(heatmap[:, :, cls], row, col, sigma)
        indices[slot] = (row, col)
        scale[slot] = (h, w)
        offset[slot] = (cy - row, cx - col)
        weights[slot] = 1.0
        if with_kp:
            for k in range(num_kp):
                ky, kx = kps[i, k, 0] * out_h, kps[i, k, 1] * out_w
                if not vis[i, k] or not (0 <= ky < out_h and 0 <= kx < out_w):
                    continue
                krow, kcol = int(np.floor(ky)), int(np.floor(kx))
                draw_gaussian(kp_heatmap[:, :, k], krow, kcol, max(sigma * kp_sigma[k], 1e-3))
                kp_indices[slot, k] = (krow, kcol)
                kp_offset[slot, k] = (ky - krow, kx - kcol)
                kp_regression[slot, k] = (ky - row, kx - col)
                kp_weights[slot, k] = 1.0
        slot += 1

    if not with_kp:
        return CenterNetTargets(heatmap, indices, scale, offset, weights)
    return CenterNetTargets(heatmap, indices, scale, offset, weights,
                            kp_heatmap, kp_indices, kp_offset, kp_regression, kp_weights)
