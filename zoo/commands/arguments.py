"""Argument types and path checks of the ``odzoo`` subcommands, applied before any expensive work.

The types turn a bad number into argparse's one-line usage error (``argument --x: ...``); the input
path checks raise :class:`~zoo.errors.ArgumentError` naming the option, the path and what to pass
(output paths: :func:`zoo.output_path.check_output_path`).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from .. import validate
from ..errors import ArgumentError

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
