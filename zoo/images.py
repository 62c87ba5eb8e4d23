"""Input normalization for ``detect()``: everything becomes a list of ``[H, W, 3]`` uint8 RGB arrays.

Accepted: an ``[H, W, 3]`` array or tensor, ``[H, W]`` / ``[H, W, 1]`` grayscale, ``[H, W, 4]``
RGBA (alpha dropped), a ``[B, H, W, C]`` batch, a PIL image, a path (str or ``os.PathLike``), or
a list/tuple of any of these (sizes may differ).

Pixel values, by dtype (never guessed from the data):

* ``uint8``: as is.
* ``uint16`` (and 16-bit image files): 16-bit samples, scaled to 8 bits (``65535`` -> ``255``).
* other integers: must lie in ``0..255``.
* floats: must lie in ``[0, 1]`` and are scaled by 255; floats outside ``[0, 1]`` (e.g. 0..255
  pixel values held as floats) are refused: pass those as ``uint8``.

Image files larger than :data:`MAX_IMAGE_PIXELS` pixels are refused before they are decoded.
Anything else raises :class:`~zoo.errors.InputError` naming the problem.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["MAX_IMAGE_PIXELS", "ImageBatch", "check_image_file", "load_image", "normalize_images", "to_rgb_uint8"]

#: Largest image file read, in pixels (an 8192 x 8192 picture, 67 megapixels; below PIL's own
#: decompression-bomb limit): larger headers are refused before decoding, so a small file claiming
#: a huge size cannot exhaust memory.
MAX_IMAGE_PIXELS = 8192 * 8192


class ImageBatch(list):
    """A list of ``[H, W, 3]`` uint8 arrays; ``single`` tells whether one image (not a list) was given."""

    single: bool = False
    from_batch: bool = False  # given as one [B, H, W, C] array or tensor

    @property
    def same_size(self) -> bool:
        """True when every image has the same height and width."""
        return len({im.shape for im in self}) <= 1


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB (16-bit files scaled to 8 bits)."""
    p = os.fspath(path)
    with _opened(p) as im:
        im.load()
        return _from_pil(im, what=f"image {p!r}")


def check_image_file(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header only (nothing is decoded).

    Raises the :class:`~zoo.errors.InputError` :func:`load_image` would for a folder, a missing,
    unrecognised or oversized file, so a batch of files can be checked before a model is loaded.
    """
    with _opened(os.fspath(path)) as im:
        return im.height, im.width


@contextlib.contextmanager
def _opened(p: str) -> Iterator[Any]:
    """The PIL image of file ``p``, its size checked; every failure is one :class:`InputError`."""
    from PIL import Image, UnidentifiedImageError

    if os.path.isdir(p):
        raise InputError(f"{p!r} is a folder, not an image file; pass the image files inside it "
                         f"(e.g. {os.path.join(p, '*.png')})")
    if not os.path.isfile(p):
        raise InputError(f"image file {p!r} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                _check_size(p, im.width, im.height)
                yield im
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"image {p!r} claims more than the {MAX_IMAGE_PIXELS} pixels odzoo reads "
                         "(a corrupt or malicious file, or a picture to resize first)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"cannot read image {p!r}: {reason}; give a PNG/JPEG file or an HxWx3 uint8 array") from None


def _check_size(path: str, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"image {path!r} claims {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} "
                         "odzoo reads (a corrupt or malicious file, or a picture to resize first)")


#: PIL modes holding 16-bit samples.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _from_pil(im: Any, what: str = "image") -> np.ndarray:
    if im.mode in _SIXTEEN_BIT_MODES or (im.mode == "I" and im.format == "PNG"):
        # 16-bit grayscale (PNG files open as "I" or "I;16"): scale the samples, never clip them
        return to_rgb_uint8(np.asarray(im).astype(np.uint16), what=what)
    if im.mode == "I":
        raise InputError(f"{what} has 32-bit integer pixels; save it with 8 or 16 bits per channel")
    if im.mode == "F":
        return to_rgb_uint8(np.asarray(im, dtype=np.float32), what=what)
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
    """One image (``[H,W]``, ``[H,W,1|3|4]``; dtype rules in the module docstring) -> ``[H, W, 3]`` uint8."""
    a = _as_array(array)
    if a.dtype == object or a.dtype.kind not in "uif" or a.dtype == np.bool_:
        raise InputError(
            f"{what} has dtype {a.dtype}; expected uint8 (or uint16, integers in 0..255, floats in [0, 1])")
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
    if a.dtype == np.uint16:  # 16-bit samples: 0..65535 -> 0..255
        return np.ascontiguousarray(np.round(a.astype(np.float32) / 257.0).astype(np.uint8))
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError(f"{what} contains NaN or infinite values")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise InputError(
                f"{what} is a float image with values in [{lo:g}, {hi:g}]; float images must lie in [0, 1] "
                "(scaled by 255): pass 0..255 pixel values as uint8, e.g. image.astype(np.uint8)")
        return np.ascontiguousarray(np.round(a.astype(np.float32) * 255.0).astype(np.uint8))
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 255:
        raise InputError(f"{what} has values in [{lo}, {hi}]; integer images must hold pixel values in 0..255 "
                         "(uint16 arrays are read as 16-bit)")
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
