"""The hub client: download, verify, cache and extract zoo archives.

``fetch(source)`` returns the folder of a whole, verified cache entry; see ``docs/cache.md`` for
the cache contract.
"""
from __future__ import annotations

from zoo.hub.bundle import import_bundle, pack
from zoo.hub.cache import Layout, Manifest, full_verify, quick_check, read_manifest
from zoo.hub.config import NetSettings
from zoo.hub.extract import Limits
from zoo.hub.fetch import Source, cache_dir, fetch, resolve
from zoo.hub.maintenance import layout_for, list_entries, prune, remove, verify

__all__ = [
    "Layout", "Limits", "Manifest", "NetSettings", "Source", "cache_dir", "fetch",
    "full_verify", "import_bundle", "layout_for", "list_entries", "pack", "prune", "quick_check",
    "read_manifest", "remove", "resolve", "verify",
]
