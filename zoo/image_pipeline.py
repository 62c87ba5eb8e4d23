"""Image files decoded ahead of the model: parallel, prefetched decodes in background threads.

:func:`image_files` turns files and folders into the list of image files to read (a folder gives
its images with a known suffix, sorted by name). :func:`prefetched` runs any decode function that
way (``odzoo bench`` decodes its dataset with it). :func:`decoded_images` yields ``(path, [H, W, 3]
uint8)`` in the given order while up to ``prefetch`` further files are decoded in parallel threads,
so the model does not wait for a decode once the pipeline is primed. Decoding is
:func:`zoo.images.load_image` itself (same 16-bit scaling, alpha handling, size limit and one-line
:class:`~zoo.errors.InputError` for a bad file); resizing to the network's input runs inside the
model's traced graph, as in the exported SavedModel.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "decode_workers", "decoded_images", "image_files", "prefetched"]

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


def decode_workers() -> int:
    """Threads decoding ahead: one per four available cores (at least 1, at most 4).

    Decoding a picture takes a fraction of a network call, so few threads keep the model fed; more
    would take cores from the network's own threads. Plain threads, not ``tf.data``: a
    ``tf.numpy_function`` decode stage slowed a folder down on 2 cores (0.4-0.96x of decoding file
    by file), competing with the network for TensorFlow's threads and the GIL.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 4))


def prefetched(
    decode: Callable[[Any], np.ndarray], items: Iterable[Any], *, prefetch: int | None = None
) -> Iterator[np.ndarray]:
    """``decode(item)`` for each item, in order, computed ahead by :func:`decode_workers` threads.

    At most ``prefetch`` decodes are in flight or waiting (default: one more than the threads). An
    exception ``decode`` raises is re-raised, unchanged, when its item's turn comes (the items before
    it are yielded first); decodes still waiting are then cancelled.
    """
    if prefetch is not None and (isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1):
        raise InputError(f"prefetch must be an integer >= 1, got {prefetch!r}")
    workers = decode_workers()
    depth = workers + 1 if prefetch is None else prefetch
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="odzoo-decode")
    try:
        remaining = iter(items)
        pending = deque(pool.submit(decode, item) for item in islice(remaining, depth))
        while pending:
            image = pending.popleft().result()
            for item in islice(remaining, 1):
                pending.append(pool.submit(decode, item))
            yield np.asarray(image, np.uint8)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def decoded_images(
    sources: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, prefetch: int | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """``(path, image)`` for every image file of ``sources``, in order, decoded ahead in parallel.

    Decoding is :func:`zoo.images.load_image`; a file that cannot be read raises its
    :class:`~zoo.errors.InputError` when its turn comes.
    """
    from .images import load_image

    files = image_files(sources)
    yield from zip(files, prefetched(load_image, files, prefetch=prefetch))
