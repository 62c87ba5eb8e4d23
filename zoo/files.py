"""File primitives: digests of whole files or their first bytes, files written whole or not at all
(a temporary file beside the target, renamed into place), and whether a folder takes new files."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def written_beside(target: str | os.PathLike[str], *, suffix: str = ".part") -> Iterator[Path]:
    """A fresh temporary path beside ``target`` (not yet created: the block creates it, with the usual
    permissions) that replaces ``target`` in one rename when the block succeeds and is removed when
    it fails or is interrupted."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, durable: bool = True,
                      **dump_options: Any) -> None:
    """Replace ``path`` with ``data`` as JSON in one rename: readers see the old file or the new
    one, never half of either. ``durable`` fsyncs before the rename."""
    with written_beside(path, suffix=".tmp") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, **dump_options)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())


def can_write_in(folder: str | os.PathLike[str]) -> bool:
    """Whether a file can be created in ``folder``, tried for real with an anonymous file that leaves
    no trace (permission bits alone do not stop root, and read-only mounts ignore them)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` itself or its closest ancestor that exists (where a new path would be created)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe
