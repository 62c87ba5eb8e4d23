"""The export's output folder: checked before any work, written whole or not at all.

:func:`check_output_folder` refuses a path that is a file, a folder that is not empty, or a place
that cannot be written. :func:`staged_folder` hands out a temporary folder beside the target and
renames it into place only when everything was written; on any error (or interruption) the
temporary folder, and any parent folder it had to create, are removed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError
from ..files import can_write_in, nearest_existing

__all__ = ["check_output_folder", "staged_folder"]


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """The absolute output path, or :class:`ConfigError` naming what is wrong with it."""
    path = Path(out).expanduser().absolute()
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"output {path} is an existing file; give a folder that does not exist yet")
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(f"output folder {path} already exists and is not empty; choose a new folder or remove it")
    base = nearest_existing(path.parent)
    if not base.is_dir():
        raise ConfigError(f"cannot create {path}: {base} is a file, not a folder")
    if not can_write_in(base):
        raise ConfigError(f"cannot write to {base} (permission denied); choose another output folder")
    return path


@contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out`` (one rename)."""
    out = check_output_folder(out)
    created: list[Path] = []
    for parent in reversed(out.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield stage
        if out.is_dir():
            out.rmdir()  # an empty folder given as the target (checked above)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                break
        raise
