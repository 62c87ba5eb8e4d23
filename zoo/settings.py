"""Every ``ODZOO_*`` environment variable, read at call time through one parser.

=======================  ===================================================================
``ODZOO_CACHE``          cache folder (default: the platform cache folder, ``~/.cache/odzoo``)
``ODZOO_OFFLINE``        boolean: never touch the network (``file://`` mirrors still allowed)
``ODZOO_MIRROR``         comma-separated base URLs tried before the original URL
``ODZOO_REGISTRY``       extra registry files, separated by ``os.pathsep``
``ODZOO_QUIET``          boolean: no progress bars
``ODZOO_TIMEOUT``        read timeout in seconds (default 60; the connect timeout is 10)
``ODZOO_RETRIES``        attempts per URL for transient errors (default 5)
``ODZOO_KEEP_ARCHIVES``  boolean: keep verified archives in ``<cache>/archives`` for offline repair
``ODZOO_TRACE_CACHE``    boolean, default on: keep traced keras-backend graphs in ``<cache>/traces``
``ODZOO_LOG``            ``debug``, ``info``, ``warning`` (default) or ``error``; ``debug``/``info``
                         also show the log lines and warnings of TensorFlow and other dependencies
=======================  ===================================================================

Booleans: ``1``/``true``/``yes``/``on`` are true, ``0``/``false``/``no``/``off`` and the empty
string (or no variable) are false, in any case; any other value is a :class:`SettingsError`.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import SettingsError

__all__ = [
    "VARIABLES", "LOG_LEVELS", "cache_override", "check_all", "flag", "keep_archives", "log_level", "mirror_list",
    "number", "offline", "quiet", "raw", "registry_files", "retries", "timeout", "trace_cache", "verbose",
]

#: Every variable odzoo reads, with a one-line description (shown by ``odzoo --help``).
VARIABLES: dict[str, str] = {
    "ODZOO_CACHE": "cache folder",
    "ODZOO_OFFLINE": "boolean: never use the network",
    "ODZOO_MIRROR": "comma-separated mirror base URLs",
    "ODZOO_REGISTRY": f"extra registry files, separated by {os.pathsep!r}",
    "ODZOO_QUIET": "boolean: no progress bars",
    "ODZOO_TIMEOUT": "download read timeout in seconds (default 60)",
    "ODZOO_RETRIES": "download attempts per URL (default 5)",
    "ODZOO_KEEP_ARCHIVES": "boolean: keep verified archives for offline repair",
    "ODZOO_TRACE_CACHE": "boolean, default on: reuse traced keras graphs across processes",
    "ODZOO_LOG": "debug, info, warning (default) or error; debug/info show dependency logs",
}
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def raw(name: str) -> str:
    """The variable's text with surrounding blanks removed ("" when unset)."""
    return os.environ.get(name, "").strip()


def flag(name: str) -> bool:
    """A boolean variable; refuses values that are neither true nor false."""
    value = raw(name).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={os.environ.get(name)!r} is not a boolean; use 1/true/yes/on or 0/false/no/off")


def number(name: str, default: float, *, integer: bool = False, minimum: float | None = None,
           positive: bool = False) -> float:
    """A numeric variable (``default`` when unset or empty), checked to be finite and in range."""
    text = raw(name)
    if not text:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not {kind}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={text!r} is not a finite number")
    if positive and value <= 0:
        raise SettingsError(f"{name}={text!r} must be positive")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={text!r} must be at least {minimum:g}")
    return value


# ----------------------------------------------------------------------------- the variables
def cache_override() -> Path | None:
    """``ODZOO_CACHE`` as a path, or None to use the platform cache folder."""
    text = raw("ODZOO_CACHE")
    return Path(text).expanduser() if text else None


def offline() -> bool:
    """``ODZOO_OFFLINE``: never touch the network."""
    return flag("ODZOO_OFFLINE")


def quiet() -> bool:
    """``ODZOO_QUIET``: no progress bars."""
    return flag("ODZOO_QUIET")


def keep_archives() -> bool:
    """``ODZOO_KEEP_ARCHIVES``: keep verified archives next to the cache entries."""
    return flag("ODZOO_KEEP_ARCHIVES")


def trace_cache() -> bool:
    """``ODZOO_TRACE_CACHE``: reuse traced keras-backend graphs across processes (on unless set false)."""
    return flag("ODZOO_TRACE_CACHE") if raw("ODZOO_TRACE_CACHE") else True


def timeout(default: float = 60.0) -> float:
    """``ODZOO_TIMEOUT``: download read timeout in seconds (positive)."""
    return float(number("ODZOO_TIMEOUT", default, positive=True))


def retries(default: int = 5) -> int:
    """``ODZOO_RETRIES``: download attempts per URL (at least 1)."""
    return int(number("ODZOO_RETRIES", default, integer=True, minimum=1))


def mirror_list() -> str:
    """``ODZOO_MIRROR`` as written (parsed and checked by :mod:`zoo.hub.mirrors`)."""
    return raw("ODZOO_MIRROR")


def registry_files() -> list[Path]:
    """``ODZOO_REGISTRY``: the extra registry files, in order."""
    return [Path(p.strip()).expanduser() for p in raw("ODZOO_REGISTRY").split(os.pathsep) if p.strip()]


def log_level() -> str:
    """``ODZOO_LOG``: one of :data:`LOG_LEVELS` (default ``warning``)."""
    value = raw("ODZOO_LOG").lower() or "warning"
    if value not in LOG_LEVELS:
        raise SettingsError(f"ODZOO_LOG={os.environ.get('ODZOO_LOG')!r} is not a log level; "
                            f"use one of {', '.join(LOG_LEVELS)}")
    return value


def check_all() -> None:
    """Parse every variable whose value can be wrong, so a bad one is reported before any work."""
    for name in ("ODZOO_OFFLINE", "ODZOO_QUIET", "ODZOO_KEEP_ARCHIVES", "ODZOO_TRACE_CACHE"):
        flag(name)
    timeout()
    retries()
    log_level()


def verbose() -> bool:
    """Whether ``ODZOO_LOG`` asks to see the logs of odzoo's dependencies (debug or info)."""
    return log_level() in ("debug", "info")
