"""tqdm progress bars that stay quiet when stderr is not a terminal, ODZOO_QUIET is true or progress=False."""
from __future__ import annotations

import sys
from typing import Any, Self

from zoo import settings


def enabled(progress: bool | None) -> bool:
    """Resolve the ``progress`` argument: True/False force; None follows ODZOO_QUIET and the TTY."""
    if progress is not None:
        return bool(progress)
    if settings.quiet():
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Silent:
    """Stand-in with tqdm's methods, used when bars are off (no per-chunk cost)."""

    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def reset(self, total: Any = None) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar(show: bool, *, desc: str, total: int | None, initial: int = 0):
    """A byte-counting bar on stderr (or a silent stand-in)."""
    if not show:
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, initial=initial, unit="B", unit_scale=True,
                unit_divisor=1024, file=sys.stderr, leave=False, dynamic_ncols=True,
                mininterval=0.2)
