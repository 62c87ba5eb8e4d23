"""File primitives shared by the cache code: digests of whole files or their first bytes, and
JSON files replaced atomically (temp file beside the target, fsync, one rename)."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

_BLOCK = 4 << 20


class _Reporting:
    """A binary file whose reads are reported to ``on_read`` (a progress bar's ``update``)."""

    def __init__(self, fh, on_read: Callable[[int], object]) -> None:
        self._fh, self._on_read = fh, on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._fh.readinto(buffer)
        if n:
            self._on_read(n)
        return n


def file_sha256(path: str | os.PathLike[str], on_read: Callable[[int], object] | None = None) -> str:
    """Hex sha256 of a whole file (``hashlib.file_digest``); ``on_read(n)`` sees each block."""
    with open(path, "rb", buffering=0) as fh:
        source = fh if on_read is None else _Reporting(fh, on_read)
        return hashlib.file_digest(source, "sha256").hexdigest()


def prefix_digest(path: str | os.PathLike[str], length: int, algorithm: str = "sha256"):
    """A running ``hashlib`` object that has seen exactly the first ``length`` bytes of ``path``
    (fewer if the file is shorter); the caller goes on feeding it what follows."""
    hasher = hashlib.new(algorithm, usedforsecurity=False)
    if length <= 0:
        return hasher
    with open(path, "rb") as fh:
        remaining = length
        while remaining:
            block = fh.read(min(remaining, _BLOCK))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)
    return hasher


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, durable: bool = True,
                      **dump_options: Any) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename: readers see the old file or the new
    one, never half of either. ``durable`` fsyncs before the rename."""
    target = Path(path)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, **dump_options)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
