"""Cache housekeeping: list, verify (re-hash and repair), remove and prune entries."""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoo.errors import NotCachedError, ZooError
from zoo.hub import config, trust
from zoo.hub.cache import (
    MANIFEST_NAME,
    Layout,
    full_verify,
    quick_check,
    read_manifest,
    tree_size,
)
from zoo.hub.fetch import Source, ensure_entry
from zoo.hub.lock import clean_stale_tmp, hold, is_held


def layout_for(cache_dir: str | os.PathLike | None = None) -> Layout:
    """The Layout of ``cache_dir`` (default: the configured cache), with its folders created."""
    root = Path(cache_dir).expanduser().resolve() if cache_dir else config.cache_dir()
    return Layout(root).ensure()


@dataclass
class EntryInfo:
    """One line of ``odzoo cache ls``."""

    name: str
    path: str
    status: str          # "ok" (cheap check passed) or "broken"
    size_bytes: int
    files: int
    archive_sha256: str | None
    source: str | None
    last_used: float | None


def list_entries(layout: Layout) -> list[EntryInfo]:
    """Every published entry with the cheap check's verdict."""
    out = []
    for name in layout.entry_names():
        entry = layout.entry(name)
        manifest = quick_check(entry)
        if manifest is None:
            out.append(EntryInfo(name, str(entry), "broken", tree_size(entry), 0, None, None, None))
            continue
        try:
            used = os.stat(entry / MANIFEST_NAME).st_mtime
        except OSError:
            used = None
        out.append(EntryInfo(name, str(entry), "ok", manifest.total_size(), len(manifest.files),
                             manifest.archive_sha256, manifest.source, used))
    return out


def partial_downloads(layout: Layout) -> list[tuple[Path, int]]:
    """Partial download files and their sizes."""
    if not layout.downloads.is_dir():
        return []
    return sorted((p, p.stat().st_size) for p in layout.downloads.glob("*.part"))


def entry_name(layout: Layout, name: str) -> str:
    """The entry folder name for a user-given name (entry name, or registry name/alias)."""
    if layout.entry(name).is_dir() if _valid(name) else False:
        return name
    try:
        from zoo.registry import get

        canonical = get(name).name
    except (ZooError, ImportError):
        canonical = None
    if canonical and layout.entry(canonical).is_dir():
        return canonical
    raise NotCachedError(f"{name} is not in the cache {layout.root}; `odzoo cache ls` lists what is")


def _valid(name: str) -> bool:
    try:
        Layout(Path("/")).entry(name)
        return True
    except ZooError:
        return False


@dataclass
class VerifyResult:
    """Outcome of ``verify`` for one entry: ok, repaired, or removed (with the reason)."""

    name: str
    status: str
    detail: str = ""
    extra_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def verify(layout: Layout, names: list[str] | None = None, *, repair: bool = True,
           offline: bool | None = None, show: bool = False) -> list[VerifyResult]:
    """Re-hash every file of the named entries (default: all). Broken entries are rebuilt from a
    kept archive or downloaded again (the manifest's archive digest decides); what cannot be
    repaired is removed. With ``repair=False`` broken entries are only reported."""
    offline = config.offline() if offline is None else offline
    names = [entry_name(layout, n) for n in names] if names else layout.entry_names()
    results = []
    for name in names:
        with hold(layout, name, announce=show):
            report = full_verify(layout.entry(name), name)
            manifest = read_manifest(layout.entry(name))
        if report.ok:
            results.append(VerifyResult(name, "ok", extra_files=report.extra))
            continue
        problem = report.problems()
        if not repair:
            results.append(VerifyResult(name, "broken", problem))
            continue
        if manifest is None:
            remove(layout, name)
            results.append(VerifyResult(name, "removed", problem + "; no manifest to repair from"))
            continue
        src = Source(name=name, url=manifest.source, sha256=manifest.archive_sha256,
                     size=manifest.archive_size, arg=name, registry_digest=True)
        try:
            ensure_entry(layout, src, offline=offline, show=show, force=True)
        except ZooError as exc:
            remove(layout, name)
            results.append(VerifyResult(name, "removed", f"{problem}; repair failed: {exc}"))
            continue
        results.append(VerifyResult(name, "repaired", problem))
    return results


def remove(layout: Layout, name: str, *, forget_digest: bool = False) -> bool:
    """Delete an entry (under its lock); optionally forget the digest recorded for its URL."""
    entry = layout.entry(name)
    with hold(layout, name):
        manifest = read_manifest(entry)
        existed = entry.exists()
        if existed:
            aside = layout.tmp_for(name) / f"rm-{os.getpid()}-{time.time_ns()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, aside)
            shutil.rmtree(aside, ignore_errors=True)
        clean_stale_tmp(layout, name)
    if forget_digest and manifest is not None:
        trust.forget(layout, manifest.source)
    return existed


@dataclass
class PruneItem:
    """Something prune removes (or would remove with --dry-run)."""

    kind: str  # "partial", "temp", "broken", "unused"
    path: str
    size_bytes: int


def prune(layout: Layout, *, older_than_days: float | None = None, dry_run: bool = False) -> list[PruneItem]:
    """Remove partial downloads and work folders nobody holds a lock for, broken entries, and (with
    ``older_than_days``) entries unused for that long."""
    items: list[PruneItem] = []
    for part, size in partial_downloads(layout):
        if not _part_in_use(layout, part):
            items.append(PruneItem("partial", str(part), size))
    if layout.tmp.is_dir():
        for folder in sorted(layout.tmp.iterdir()):
            if folder.is_dir() and _valid(folder.name) and not is_held(layout, folder.name):
                for item in sorted(folder.iterdir()):
                    items.append(PruneItem("temp", str(item), tree_size(item) if item.is_dir()
                                           else item.stat().st_size))
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    for info in list_entries(layout):
        if info.status == "broken":
            items.append(PruneItem("broken", info.path, info.size_bytes))
        elif cutoff is not None and (info.last_used or 0) < cutoff:
            items.append(PruneItem("unused", info.path, info.size_bytes))
    if not dry_run:
        for item in items:
            path = Path(item.path)
            if item.kind in ("broken", "unused"):
                remove(layout, path.name)
            elif item.kind == "partial":
                path.unlink(missing_ok=True)
                path.with_name(path.name + ".json").unlink(missing_ok=True)
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return items


def _part_in_use(layout: Layout, part: Path) -> bool:
    """A .part (``<name>@<key>.part``) is in use while its entry's lock is held."""
    name = part.name.split("@", 1)[0]
    if "@" in part.name and _valid(name):
        return is_held(layout, name)
    return False
