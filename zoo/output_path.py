"""Where odzoo writes: one check for every output path, run before any work, and the parent folders
an output needs, made for it and removed again when writing fails.

:func:`check_output_path` takes the path, the option or argument that named it (``-o``, ``--out``,
``out_dir``...) and what must go there (a ``file``, a ``folder`` that may hold files already, or a
``new_folder`` that must not exist yet or be empty). Every problem raises
:class:`~zoo.errors.ArgumentError` with one line: ``<option> <path>: <what is wrong>; <what to do>``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ArgumentError
from .files import can_write_in, nearest_existing

__all__ = ["OUTPUT_KINDS", "check_output_path", "created_parents"]

#: what an output path may name
OUTPUT_KINDS = ("file", "folder", "new_folder")


def check_output_path(
    path: str | os.PathLike[str],
    option: str,
    *,
    kind: str = "folder",
    suffixes: Iterable[str] = (),
    outside: tuple[str | os.PathLike[str], str] | None = None,
) -> Path:
    """``path`` (``~`` expanded) when something of ``kind`` can be written there, else :class:`ArgumentError`.

    ``suffixes`` (files): the allowed file name endings. ``outside``: ``(folder, what it is)``, a
    folder the output must not be inside (a bundle inside the cache it packs). Missing parent
    folders are fine when the nearest existing one is a writable folder (see :func:`created_parents`).
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OUTPUT_KINDS)}, got {kind!r}")
    target = Path(path).expanduser()

    def refuse(problem: str) -> ArgumentError:
        return ArgumentError(f"{option} {target}: {problem}")

    allowed = tuple(suffixes)
    if kind == "file":
        if target.is_dir():
            example = target / ("out" + (allowed[0] if allowed else ""))
            raise refuse(f"is a folder; give a file name such as {example}")
        if allowed and target.suffix.lower() not in allowed:
            shown = repr(target.suffix) if target.suffix else "no extension"
            raise refuse(f"has {shown}; use one of {', '.join(allowed)}")
    elif target.exists() and not target.is_dir():
        raise refuse("is a file; give a folder")
    elif kind == "new_folder" and target.is_dir() and any(target.iterdir()):
        raise refuse("is a folder that is not empty; choose a new folder or remove it")
    base = nearest_existing(target if kind != "file" else target.parent)
    if not base.is_dir():
        raise refuse(f"{base} is a file, so the folder cannot be created; choose another path")
    if outside is not None:
        folder, what = outside
        root = Path(folder).expanduser().resolve()
        if (base.resolve() / target.absolute().relative_to(base)).is_relative_to(root):
            raise refuse(f"is inside {what} {root}; write it elsewhere")
    if kind == "file" and target.exists() and not os.access(target, os.W_OK):
        raise refuse("exists and cannot be replaced; choose another file")
    if not can_write_in(base):
        raise refuse(f"cannot write in {base}; choose a writable location")
    return target


@contextmanager
def created_parents(path: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Make the missing parent folders of ``path`` (yielded, outermost first); if the block fails or
    is interrupted, remove those that are still empty, so a failed write leaves no trace."""
    created: list[Path] = []
    for parent in reversed(Path(path).absolute().parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    try:
        yield created
    except BaseException:
        for parent in reversed(created):
            try:
                parent.rmdir()
            except OSError:
                break
        raise
