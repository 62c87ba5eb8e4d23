"""Training-time augmentation of one image with its boxes (and keypoints), in numpy.

Boxes are normalized ``(ymin, xmin, ymax, xmax)``; keypoints normalized ``(y, x)`` ``[N, K, 2]``
with a visibility mask ``[N, K]``; instance masks ``[N, H, W]`` uint8 at the image's size follow the
image through flips and crops. Every random choice comes from the ``numpy.random.Generator``
passed in, so a seeded generator reproduces the same sample exactly.

* :func:`horizontal_flip` mirrors the image, boxes and keypoints and swaps left/right keypoint types
  with a flip permutation (e.g. COCO person: left eye <-> right eye);
* :func:`random_crop` crops a window (scale and aspect jitter), or zooms out onto a padded canvas,
  keeping the objects whose centre stays inside;
* :func:`color_jitter` changes brightness, contrast, saturation and hue a little.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class Sample:
    """One training example (see the module docstring for the conventions)."""

    image: np.ndarray                      # [H, W, 3] uint8
    boxes: np.ndarray                      # [N, 4] float32 normalized
    classes: np.ndarray                    # [N] int64 (0-based)
    keypoints: np.ndarray | None = None    # [N, K, 2] float32 normalized (y, x)
    keypoint_visibility: np.ndarray | None = None  # [N, K] bool
    masks: np.ndarray | None = None        # [N, H, W] uint8, aligned with image


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment` does; probabilities and ranges."""

    flip_probability: float = 0.5
    keypoint_flip_permutation: tuple[int, ...] | None = None
    crop_probability: float = 0.75
    min_area: float = 0.35
    aspect_range: tuple[float, float] = (0.6, 1.6)
    zoom_out_probability: float = 0.25
    max_zoom_out: float = 1.5
    brightness: float = 0.15
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02


def horizontal_flip(sample: Sample, permutation: Sequence[int] | None = None) -> Sample:
    """Mirror left-right; keypoint types are reordered by ``permutation`` when given."""
    boxes = sample.boxes.copy()
    boxes[:, [1, 3]] = 1.0 - sample.boxes[:, [3, 1]]
    kps, vis = sample.keypoints, sample.keypoint_visibility
    if kps is not None:
        kps = kps.copy()
        kps[..., 1] = 1.0 - kps[..., 1]
        if permutation is not None:
            perm = np.asarray(permutation, np.int64)
            if perm.shape[0] != kps.shape[1]:
                raise ValueError(f"keypoint flip permutation has {perm.shape[0]} entries for {kps.shape[1]} keypoints")
            kps = kps[:, perm]
            vis = None if vis is None else vis[:, perm]
    masks = None if sample.masks is None else np.ascontiguousarray(sample.masks[:, :, ::-1])
    return Sample(np.ascontiguousarray(sample.image[:, ::-1]), boxes, sample.classes, kps, vis, masks)


def crop(sample: Sample, window: tuple[float, float, float, float]) -> Sample:
    """Crop to ``window`` (normalized ymin, xmin, ymax, xmax; may extend past the image, padded with 0).

    Objects whose centre leaves the window are dropped; the others are clipped to it.
    """
    h, w = sample.image.shape[:2]
    wy0, wx0, wy1, wx1 = window
    py0, px0 = round(wy0 * h), round(wx0 * w)
    py1, px1 = max(py0 + 1, round(wy1 * h)), max(px0 + 1, round(wx1 * w))
    canvas = np.zeros((py1 - py0, px1 - px0, 3), np.uint8)
    sy0, sx0, sy1, sx1 = max(py0, 0), max(px0, 0), min(py1, h), min(px1, w)
    if sy1 > sy0 and sx1 > sx0:
        canvas[sy0 - py0:sy1 - py0, sx0 - px0:sx1 - px0] = sample.image[sy0:sy1, sx0:sx1]
    masks = None
    if sample.masks is not None:
        masks = np.zeros((sample.masks.shape[0], *canvas.shape[:2]), np.uint8)
        if sy1 > sy0 and sx1 > sx0:
            masks[:, sy0 - py0:sy1 - py0, sx0 - px0:sx1 - px0] = sample.masks[:, sy0:sy1, sx0:sx1]
    # exact normalized window of the pixels kept
    wy0, wx0, wy1, wx1 = py0 / h, px0 / w, py1 / h, px1 / w
    wh, ww = wy1 - wy0, wx1 - wx0
    cy = (sample.boxes[:, 0] + sample.boxes[:, 2]) / 2
    cx = (sample.boxes[:, 1] + sample.boxes[:, 3]) / 2
    keep = (cy > wy0) & (cy < wy1) & (cx > wx0) & (cx < wx1)
    boxes = sample.boxes[keep].copy()
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - wy0) / wh, 0.0, 1.0)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - wx0) / ww, 0.0, 1.0)
    kps, vis = sample.keypoints, sample.keypoint_visibility
    if kps is not None:
        kps = kps[keep].copy()
        kps[..., 0] = (kps[..., 0] - wy0) / wh
        kps[..., 1] = (kps[..., 1] - wx0) / ww
        inside = (kps[..., 0] >= 0) & (kps[..., 0] < 1) & (kps[..., 1] >= 0) & (kps[..., 1] < 1)
        vis = inside if vis is None else vis[keep] & inside
    return Sample(canvas, boxes.astype(np.float32), sample.classes[keep], kps, vis,
                  None if masks is None else masks[keep])


def random_crop(sample: Sample, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Sample:
    """Crop a random window (area in ``[min_area, 1]``, aspect jitter) or zoom out onto padding."""
    if rng.random() < config.zoom_out_probability:
        factor = float(rng.uniform(1.0, config.max_zoom_out))
        y0 = -float(rng.uniform(0.0, factor - 1.0))
        x0 = -float(rng.uniform(0.0, factor - 1.0))
        return crop(sample, (y0, x0, y0 + factor, x0 + factor))
    for _ in range(10):
        area = float(rng.uniform(config.min_area, 1.0))
        aspect = float(np.exp(rng.uniform(np.log(config.aspect_range[0]), np.log(config.aspect_range[1]))))
        ch, cw = np.sqrt(area / aspect), np.sqrt(area * aspect)
        if ch > 1.0 or cw > 1.0:
            continue
        y0, x0 = float(rng.uniform(0.0, 1.0 - ch)), float(rng.uniform(0.0, 1.0 - cw))
        out = crop(sample, (y0, x0, y0 + ch, x0 + cw))
        if len(sample.boxes) == 0 or len(out.boxes) > 0:
            return out
    return sample


def color_jitter(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Random brightness, contrast, saturation and hue changes of a uint8 RGB image."""
    img = image.astype(np.float32) / 255.0
    img = img + float(rng.uniform(-config.brightness, config.brightness))
    mean = img.mean()
    img = (img - mean) * float(rng.uniform(1 - config.contrast, 1 + config.contrast)) + mean
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = (img - grey[..., None]) * float(rng.uniform(1 - config.saturation, 1 + config.saturation)) + grey[..., None]
    if config.hue > 0:
        img = _rotate_hue(img, float(rng.uniform(-config.hue, config.hue)) * 2 * np.pi)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _rotate_hue(img: np.ndarray, angle: float) -> np.ndarray:
    """Rotate hue by ``angle`` radians in YIQ space (keeps luma)."""
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)
    matrix = np.linalg.inv(to_yiq) @ rot @ to_yiq
    return img @ matrix.T.astype(np.float32)


def augment(sample: Sample, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Sample:
    """Flip, crop/zoom and colour-jitter one sample."""
    if rng.random() < config.flip_probability:
        sample = horizontal_flip(sample, config.keypoint_flip_permutation)
    if rng.random() < config.crop_probability:
        sample = random_crop(sample, rng, config)
    return dataclasses.replace(sample, image=color_jitter(sample.image, rng, config))
