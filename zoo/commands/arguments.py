"""Argument types and path checks of the ``odzoo`` subcommands, applied before any expensive work.

The types turn a bad number into argparse's one-line usage error (``argument --x: ...``); the path
checks raise :class:`~zoo.errors.ArgumentError` naming the option, the path and what to pass.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .. import validate
from ..errors import ArgumentError
from ..files import can_write_in, nearest_existing

#: File types ``--out`` images may have (written by Pillow from the suffix).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _typed(check: Callable[[str], object], kind: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return check(text)
        except (ValueError, ArgumentError) as exc:
            detail = str(exc).removeprefix("value ") if isinstance(exc, ArgumentError) else f"not {kind}"
            raise argparse.ArgumentTypeError(f"{text!r}: {detail}") from None

    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def number(*, minimum: float | None = None, maximum: float | None = None,
           positive: bool = False) -> Callable[[str], object]:
    """An argparse type: a finite number, optionally > 0 and within [minimum, maximum]."""
    return _typed(lambda text: validate.real(float(text), "value", minimum=minimum, maximum=maximum,
                                             positive=positive), "a number")


def probability() -> Callable[[str], object]:
    """An argparse type: a number in [0, 1] (score thresholds)."""
    return number(minimum=0.0, maximum=1.0)


def whole(*, minimum: int | None = None) -> Callable[[str], object]:
    """An argparse type: a whole number, at least ``minimum``."""
    return _typed(lambda text: validate.integer(int(text), "value", minimum=minimum), "a whole number")


# ----------------------------------------------------------------------------- paths
def _check_creatable(option: str, path: Path, folder: Path) -> None:
    """``path`` (not yet existing) can be created: the nearest existing ancestor of ``folder``, the
    folder that will hold it, is a writable folder."""
    base = nearest_existing(folder)
    if not base.is_dir():
        raise ArgumentError(f"{option} {path}: {base} is a file, so the folder cannot be created; choose another path")
    if not can_write_in(base):
        raise ArgumentError(f"{option} {path}: cannot write in {base}; choose a writable location")


def output_file(option: str, path: str | os.PathLike[str], suffixes: Iterable[str]) -> Path:
    """An output file path: not a folder, a known suffix, in a location that can be written."""
    target = Path(path)
    allowed = tuple(suffixes)
    if target.is_dir():
        raise ArgumentError(f"{option} {target} is a folder; give a file name such as {target / ('out' + allowed[0])}")
    if target.suffix.lower() not in allowed:
        shown = repr(target.suffix) if target.suffix else "no extension"
        raise ArgumentError(f"{option} {target} has {shown}; use one of {', '.join(allowed)}")
    if target.exists():
        if not os.access(target, os.W_OK) or not can_write_in(target.parent):
            raise ArgumentError(f"{option} {target} exists and cannot be replaced; choose another file")
        return target
    _check_creatable(option, target, target.parent)
    return target


def output_folder(option: str, path: str | os.PathLike[str]) -> Path:
    """An output folder path: an existing writable folder, or one that can be created."""
    target = Path(path)
    if target.exists():
        if not target.is_dir():
            raise ArgumentError(f"{option} {target} is a file; give a folder")
        if not can_write_in(target):
            raise ArgumentError(f"{option} {target}: cannot write in this folder; choose another")
        return target
    _check_creatable(option, target, target)
    return target


def input_file(option: str, path: str | os.PathLike[str], what: str) -> Path:
    """An existing, readable file."""
    source = Path(path)
    if source.is_dir():
        raise ArgumentError(f"{option} {source} is a folder; give the {what} file")
    if not source.is_file():
        raise ArgumentError(f"{option} {source} does not exist; give the {what} file")
    if not os.access(source, os.R_OK):
        raise ArgumentError(f"{option} {source} is not readable; check its permissions")
    return source


def input_folder(option: str, path: str | os.PathLike[str], what: str) -> Path:
    """An existing folder."""
    source = Path(path)
    if source.is_file():
        raise ArgumentError(f"{option} {source} is a file; give the folder of {what}")
    if not source.is_dir():
        raise ArgumentError(f"{option} {source} does not exist; give the folder of {what}")
    return source
