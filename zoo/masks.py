"""Instance masks: box-relative mask predictions (Mask R-CNN's ``detection_masks``) -> image masks."""
from __future__ import annotations

import numpy as np


def reframe_box_masks(masks: np.ndarray, boxes_normalized: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Paste ``[N, h, w]`` masks predicted inside each box into ``[N, H, W]`` image-sized masks.

    ``boxes_normalized`` are ``(ymin, xmin, ymax, xmax)`` in [0, 1] of the image. Each mask is
    resampled bilinearly over its box (values stay probabilities); pixels outside the box are 0.
    """
    height, width = int(image_size[0]), int(image_size[1])
    masks = np.asarray(masks, np.float32)
    boxes = np.asarray(boxes_normalized, np.float32).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"expected [N, h, w] masks for {boxes.shape[0]} boxes, got shape {masks.shape}")
    out = np.zeros((boxes.shape[0], height, width), np.float32)
    ys = (np.arange(height, dtype=np.float32) + 0.5) / max(height, 1)
    xs = (np.arange(width, dtype=np.float32) + 0.5) / max(width, 1)
    for i, (mask, (y0, x0, y1, x1)) in enumerate(zip(masks, boxes)):
        if y1 <= y0 or x1 <= x0:
            continue
        rows = np.flatnonzero((ys >= y0) & (ys <= y1))
        cols = np.flatnonzero((xs >= x0) & (xs <= x1))
        if rows.size == 0 or cols.size == 0:
            continue
        # pixel centres -> continuous mask coordinates (cell centres at k + 0.5)
        my = (ys[rows] - y0) / (y1 - y0) * mask.shape[0] - 0.5
        mx = (xs[cols] - x0) / (x1 - x0) * mask.shape[1] - 0.5
        out[i][np.ix_(rows, cols)] = _bilinear(mask, my, mx)
    return out


def _bilinear(grid: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Sample ``grid`` at the outer product of ``ys`` x ``xs`` (clamped to the edges)."""
    h, w = grid.shape
    ys = np.clip(ys, 0.0, h - 1.0)
    xs = np.clip(xs, 0.0, w - 1.0)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[np.ix_(y0, x0)] * (1 - fx) + grid[np.ix_(y0, x1)] * fx
    bottom = grid[np.ix_(y1, x0)] * (1 - fx) + grid[np.ix_(y1, x1)] * fx
    return top * (1 - fy) + bottom * fy
