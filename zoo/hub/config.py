"""Settings of the hub client, read from the environment at call time through :mod:`zoo.settings`.

``ODZOO_CACHE``     cache folder (default: the platform cache folder, e.g. ``~/.cache/odzoo``)
``ODZOO_OFFLINE``   boolean (``1``/``true``/``yes``/``on``): never touch the network (``file://`` mirrors still allowed)
``ODZOO_MIRROR``    comma-separated base URLs tried before the original URL
``ODZOO_QUIET``     boolean: no progress bars
``ODZOO_TIMEOUT``   read timeout in seconds (default 60; the connect timeout is 10)
``ODZOO_RETRIES``   attempts per URL for transient errors (default 5)
``ODZOO_KEEP_ARCHIVES``  boolean: keep verified archives in ``<cache>/archives`` for offline repair
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zoo import settings
from zoo.errors import CacheError


def env_flag(name: str) -> bool:
    """A boolean variable (1/true/yes/on, 0/false/no/off/empty); see :func:`zoo.settings.flag`."""
    return settings.flag(name)


def cache_dir() -> Path:
    """The cache root: ``ODZOO_CACHE`` or the platform cache folder for odzoo (created if needed)."""
    root = settings.cache_override()
    if root is None:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("odzoo"))
    if root.exists() and not root.is_dir():
        raise CacheError(f"the cache folder {root} is a file; set ODZOO_CACHE to a folder")
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
    return settings.offline()


def keep_archives() -> bool:
    """Whether verified archives are kept next to the entries (``ODZOO_KEEP_ARCHIVES``)."""
    return settings.keep_archives()


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
        return cls(read_timeout=settings.timeout(cls.read_timeout), attempts=settings.retries(cls.attempts))

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures (1-based)."""
        return min(self.backoff_max, self.backoff_base * (2 ** (failures - 1)))
