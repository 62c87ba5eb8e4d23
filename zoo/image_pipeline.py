"""Image files decoded ahead of the model: a ``tf.data`` pipeline of parallel, prefetched decodes.

:func:`image_files` turns files and folders into the list of image files to read (a folder gives
its images with a known suffix, sorted by name). :func:`decoded_images` yields ``(path, [H, W, 3]
uint8)`` in the given order while up to ``prefetch`` further files are decoded in parallel threads,
so the model never waits for a decode once the pipeline is primed. Decoding is
:func:`zoo.images.load_image` itself (same 16-bit scaling, alpha handling, size limit and one-line
:class:`~zoo.errors.InputError` for a bad file); resizing to the network's input runs inside the
model's traced graph, as in the exported SavedModel.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "decoded_images", "image_files"]

#: Suffixes a folder's files must have to be read as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_files(sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files as given, folders expanded to their image files (sorted); InputError for what is missing."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files: list[str] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"folder {str(path)!r} has no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(str(path))
        else:
            raise InputError(f"image file {str(path)!r} does not exist")
    if not files:
        raise InputError("no image files given")
    return files


def _decode(path: bytes) -> tuple[np.ndarray, bytes]:
    """``(image, b"")`` or ``(empty image, error line)``: errors travel as data, raised by the consumer."""
    from .images import load_image

    try:
        return load_image(path.decode()), b""
    except InputError as exc:
        return np.zeros((0, 0, 3), np.uint8), str(exc).encode()


def decoded_images(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, prefetch: int | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, image)`` for every image file of ``sources``, in order, decoded ahead in parallel.

    ``prefetch``: how many decoded images may wait (default: tf.data's autotuning). A file that cannot
    be read raises :class:`~zoo.errors.InputError` when its turn comes.
    """
    import tensorflow as tf

    files = image_files(sources)
    if prefetch is not None and prefetch < 1:
        raise InputError(f"prefetch must be >= 1, got {prefetch}")
    depth = tf.data.AUTOTUNE if prefetch is None else int(prefetch)

    def decode(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, error = tf.numpy_function(_decode, [path], (tf.uint8, tf.string), stateful=False)
        image.set_shape([None, None, 3])
        return image, error

    dataset = tf.data.Dataset.from_tensor_slices(files).map(
        decode, num_parallel_calls=depth, deterministic=True
    ).prefetch(depth)
    for path, (image, error) in zip(files, dataset.as_numpy_iterator()):
        if error:
            raise InputError(error.decode())
        yield path, image
