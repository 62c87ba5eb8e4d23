"""Trust on first use: the sha256 of the first verified download of each URL, kept in
``<cache>/digests.json``; later downloads of that URL must match it.

Only bytes that arrived over https (or from a local ``file://`` copy) are trusted. A digest first
seen over plain http is recorded with ``"trusted": false`` for information and binds nothing: later
downloads are not held to it, and the first trusted download replaces it."""
from __future__ import annotations

import json
import time

from zoo.errors import CacheError, IntegrityError
from zoo.hub.cache import Layout
from zoo.files import write_json_atomic
from zoo.hub.lock import hold

_LOCK_NAME = "digests"


def _read(layout: Layout) -> dict:
    try:
        with open(layout.digests, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CacheError(f"{layout.digests} is unreadable ({exc}); fix or delete it "
                         "(recorded digests will be learned again)") from exc
    return data if isinstance(data, dict) else {}


def recorded(layout: Layout, url: str) -> dict | None:
    """The trusted record ``{"sha256", "size", "recorded"}`` for ``url``, or None (records made
    before the ``trusted`` flag existed count as trusted)."""
    entry = _read(layout).get(url)
    if isinstance(entry, dict) and "sha256" in entry and entry.get("trusted", True):
        return entry
    return None


def record(layout: Layout, url: str, sha256: str, size: int, *, trusted: bool = True) -> None:
    """Remember the digest of ``url`` unless a trusted one is known; a different trusted one is an
    error. ``trusted=False`` (bytes seen over plain http) only notes the digest."""
    with hold(layout, _LOCK_NAME):
        data = _read(layout)
        known = data.get(url)
        if isinstance(known, dict) and known.get("sha256") and known.get("trusted", True):
            if known["sha256"] != sha256:
                raise IntegrityError(
                    f"{url}: sha256 {sha256} differs from {known['sha256']} recorded on first "
                    f"download in {layout.digests}; if the publisher really changed the file, "
                    "run `odzoo cache rm NAME --forget-digest` and download again")
            return
        data[url] = {"sha256": sha256, "size": size, "recorded": time.time(), "trusted": trusted}
        _write(layout, data)


def forget(layout: Layout, url: str) -> bool:
    """Drop the record of ``url``; True if there was one."""
    with hold(layout, _LOCK_NAME):
        data = _read(layout)
        if url not in data:
            return False
        del data[url]
        _write(layout, data)
        return True


def _write(layout: Layout, data: dict) -> None:
    write_json_atomic(layout.digests, data, indent=1, sort_keys=True)
