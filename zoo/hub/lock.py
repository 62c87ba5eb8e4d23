"""Per-entry file locks in ``<cache>/locks`` (OS locks: a killed process releases its lock)."""
from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from filelock import FileLock, Timeout

from zoo.errors import CacheError
from zoo.hub.cache import Layout


@contextmanager
def hold(layout: Layout, name: str, *, announce: bool = False, timeout: float = -1) -> Iterator[None]:
    """Hold the lock of entry ``name``; wait for other holders (announced on stderr if asked)."""
    layout.locks.mkdir(parents=True, exist_ok=True)
    path = layout.lock(name)
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if announce:
            print(f"odzoo: waiting for another process working on {name} (lock {path})",
                  file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise CacheError(f"{name} is locked by another process ({path}); try again when it "
                             "finishes, or remove the lock file if no odzoo process is running") from None
    except OSError as exc:
        raise CacheError(f"cannot lock {path}: {exc.strerror or exc}; check the permissions "
                         "of the cache folder or set ODZOO_CACHE") from exc
    try:
        yield
    finally:
        lock.release()


def is_held(layout: Layout, name: str) -> bool:
    """True while some process or thread holds the lock of ``name``."""
    path = layout.lock(name)
    if not path.exists():
        return False
    lock = FileLock(str(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return True
    lock.release()
    return False


def clean_stale_tmp(layout: Layout, name: str) -> int:
    """Remove work folders left under ``tmp/<name>`` by dead processes. Call with the lock held."""
    folder = layout.tmp_for(name)
    removed = 0
    if folder.is_dir():
        for item in folder.iterdir():
            shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
            removed += 1
    return removed
