"""Input normalization for ``detect()``: everything becomes a list of ``[H, W, 3]`` uint8 RGB arrays.

Accepted: an ``[H, W, 3]`` array or tensor (uint8, other integers in 0..255, or floats in 0..255),
``[H, W]`` / ``[H, W, 1]`` grayscale, ``[H, W, 4]`` RGBA (alpha dropped), a ``[B, H, W, C]`` batch,
a PIL image, a path (str or ``os.PathLike``), or a list/tuple of any of these (sizes may differ).
Anything else raises :class:`~zoo.errors.InputError` naming the problem.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["ImageBatch", "load_image", "normalize_images", "to_rgb_uint8"]


class ImageBatch(list):
    """A list of ``[H, W, 3]`` uint8 arrays; ``single`` tells whether one image (not a list) was given."""

    single: bool = False
    from_batch: bool = False  # given as one [B, H, W, C] array or tensor

    @property
    def same_size(self) -> bool:
        """True when every image has the same height and width."""
        return len({im.shape for im in self}) <= 1


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise InputError(f"image file {p!r} does not exist")
    try:
        with Image.open(p) as im:
            im.load()
            return _from_pil(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"cannot read image {p!r}: {exc}; give a PNG/JPEG file or an HxWx3 uint8 array") from exc


def _from_pil(im: Any) -> np.ndarray:
    if im.mode in ("RGBA", "LA", "P", "PA"):
        im = im.convert("RGBA").convert("RGB")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def _as_array(image: Any) -> np.ndarray:
    if hasattr(image, "numpy") and callable(image.numpy):  # tf.Tensor / EagerTensor
        return np.asarray(image.numpy())
    try:
        return np.asarray(image)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot use {type(image).__name__} as an image: {exc}") from exc


def to_rgb_uint8(array: Any, *, what: str = "image") -> np.ndarray:
    """One image (``[H,W]``, ``[H,W,1|3|4]``, any real dtype in 0..255) -> ``[H, W, 3]`` uint8."""
    a = _as_array(array)
    if a.dtype == object or a.dtype.kind not in "uif" or a.dtype == np.bool_:
        raise InputError(f"{what} has dtype {a.dtype}; expected uint8 (or integers/floats in 0..255)")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise InputError(f"{what} has rank {a.ndim} (shape {a.shape}); expected [H, W, 3] (or [H, W], [B, H, W, 3])")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what} is empty (shape {a.shape})")
    channels = a.shape[2]
    if channels == 1:
        a = np.repeat(a, 3, axis=2)
    elif channels == 4:
        a = a[:, :, :3]
    elif channels != 3:
        raise InputError(f"{what} has {channels} channels (shape {a.shape}); expected 3 (RGB), 1 (gray) or 4 (RGBA)")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise InputError(f"{what} has values in [{lo:g}, {hi:g}]; expected pixel values in 0..255")
    if a.dtype.kind == "f":
        a = np.round(a)
    return np.ascontiguousarray(a.astype(np.uint8))


def _one(item: Any, what: str) -> tuple[list[np.ndarray], bool]:
    """One item of the input: ``([image], False)``, or ``(images, True)`` for a rank-4 batch."""
    if isinstance(item, (str, os.PathLike)):
        return [load_image(item)], False
    if type(item).__module__.startswith("PIL."):
        return [_from_pil(item)], False
    a = _as_array(item)
    if a.ndim == 4:
        if a.shape[0] == 0:
            raise InputError(f"{what} is an empty batch (shape {a.shape})")
        return [to_rgb_uint8(a[i], what=f"{what}[{i}]") for i in range(a.shape[0])], True
    return [to_rgb_uint8(a, what=what)], False


def normalize_images(images: Any) -> ImageBatch:
    """Normalize any accepted input; ``.single`` is True when one image (not a list or batch) was given."""
    out = ImageBatch()
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("no images given (empty list)")
        for i, item in enumerate(images):
            out.extend(_one(item, f"image {i}")[0])
        out.single = False
        return out
    if images is None:
        raise InputError("no image given (None)")
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        return normalize_images(list(images))
    if isinstance(images, bytes):
        raise InputError("raw bytes are not an image; pass a path, a PIL image or an HxWx3 uint8 array")
    items, is_batch = _one(images, "image")
    out.extend(items)
    out.single = not is_batch
    out.from_batch = is_batch
    return out
