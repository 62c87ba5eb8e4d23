"""Settings of the hub client, read from the environment at call time.

``ODZOO_CACHE``     cache folder (default: the platform cache folder, e.g. ``~/.cache/odzoo``)
``ODZOO_OFFLINE``   ``1``/``true``: never touch the network (``file://`` mirrors still allowed)
``ODZOO_MIRROR``    comma-separated base URLs tried before the original URL
``ODZOO_QUIET``     ``1``: no progress bars
``ODZOO_TIMEOUT``   read timeout in seconds (default 60; the connect timeout is 10)
``ODZOO_RETRIES``   attempts per URL for transient errors (default 5)
``ODZOO_KEEP_ARCHIVES``  ``1``: keep verified archives in ``<cache>/archives`` for offline repair
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import CacheError

_TRUE = {"1", "true", "yes", "on"}


def env_flag(name: str) -> bool:
    """True when the environment variable holds 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in _TRUE


def cache_dir() -> Path:
    """The cache root: ``ODZOO_CACHE`` or the platform cache folder for odzoo (created if needed)."""
    override = os.environ.get("ODZOO_CACHE", "").strip()
    if override:
        root = Path(override).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("odzoo"))
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CacheError(
            f"cannot create the cache folder {root}: {exc.strerror or exc}; "
            "set ODZOO_CACHE to a writable folder"
        ) from exc
    return root.resolve()


def offline() -> bool:
    """Whether ``ODZOO_OFFLINE`` forbids network access."""
    return env_flag("ODZOO_OFFLINE")


def keep_archives() -> bool:
    """Whether verified archives are kept next to the entries (``ODZOO_KEEP_ARCHIVES``)."""
    return env_flag("ODZOO_KEEP_ARCHIVES")


def _float_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CacheError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise CacheError(f"{name}={raw!r} must be positive")
    return value


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CacheError(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise CacheError(f"{name}={raw!r} must be at least 1")
    return value


@dataclass(frozen=True)
class NetSettings:
    """Timeouts, retry and backoff policy of one download."""

    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    chunk_size: int = 1 << 20

    @classmethod
    def from_env(cls) -> NetSettings:
        """Defaults, with ``ODZOO_TIMEOUT`` and ``ODZOO_RETRIES`` applied."""
        return cls(read_timeout=_float_env("ODZOO_TIMEOUT", cls.read_timeout),
                   attempts=_int_env("ODZOO_RETRIES", cls.attempts))

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures (1-based)."""
        return min(self.backoff_max, self.backoff_base * (2 ** (failures - 1)))
