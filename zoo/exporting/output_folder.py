"""The export's output folder: checked before any work, written whole or not at all.

The folder must not exist yet or be empty (:func:`zoo.output_path.check_output_path`, kind
``new_folder``). :func:`staged_folder` hands out a temporary folder beside the target and renames it
into place only when everything was written; on any error (or interruption) the temporary folder,
and any parent folder it had to create, are removed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..output_path import check_output_path, created_parents

__all__ = ["check_output_folder", "staged_folder"]

#: how the export names its output folder in messages
OUT_OPTION = "out"


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """The absolute output folder, or :class:`~zoo.errors.ArgumentError` naming what is wrong with it."""
    return check_output_path(out, OUT_OPTION, kind="new_folder").absolute()


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it becomes ``out`` (one rename)."""
    out = check_output_folder(out)
    with created_parents(out):
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        try:
            yield stage
            if out.is_dir():
                out.rmdir()  # an empty folder given as the target (checked above)
            os.replace(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
