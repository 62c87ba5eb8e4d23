"""Cache housekeeping: list, verify (re-hash, re-record, repair or quarantine), remove and prune.

Content decides: an entry whose files hash to its manifest is healthy, whatever its file times say.
Nothing here deletes an entry unless asked to by name (``remove``) or by an explicit prune policy;
a damaged entry that cannot be rebuilt is quarantined (kept, marked, refused by loads).
"""
from __future__ import annotations

import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from zoo.errors import ArgumentError, NotCachedError, ZooError
from zoo.hub import config, trust
from zoo.hub.cache import (
    DAMAGED,
    MANIFEST_NAME,
    OK,
    QUARANTINED,
    UNVERIFIED,
    Layout,
    Manifest,
    entry_state,
    full_verify,
    lift_quarantine,
    quarantine,
    quarantine_info,
    read_manifest,
    repair_hint,
    rerecord,
    tree_size,
)
from zoo.hub.fetch import Source, ensure_entry, source_from_spec
from zoo.hub.lock import clean_stale_tmp, hold, is_held


def layout_for(cache_dir: str | os.PathLike | None = None) -> Layout:
    """The Layout of ``cache_dir`` (default: the configured cache), with its folders created."""
    root = Path(cache_dir).expanduser().resolve() if cache_dir else config.cache_dir()
    return Layout(root).ensure()


# -- arguments ----------------------------------------------------------------------------------
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_days(text: str | float, option: str = "--older-than") -> float:
    """A number of days (>= 0, finite), or ArgumentError naming the option."""
    try:
        days = float(text)
    except (TypeError, ValueError):
        days = math.nan
    if not math.isfinite(days) or days < 0:
        raise ArgumentError(f"{option} {text!r}: give a number of days, 0 or more (for example 30)")
    return days


def parse_size(text: str | int, option: str = "--max-size") -> int:
    """A size in bytes from ``123``, ``500M``, ``1.5GiB``, ``2G``... (units are powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    match = _SIZE_RE.match(str(text))
    if match is None:
        raise ArgumentError(f"{option} {text!r}: give a size such as 500M, 20G or 1.5GiB "
                            "(bytes, K, M, G or T; 0 or more)")
    value = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]
    if not math.isfinite(value):
        raise ArgumentError(f"{option} {text!r}: the size is too large")
    return int(value)


# -- listing ------------------------------------------------------------------------------------
@dataclass
class EntryInfo:
    """One line of ``odzoo cache ls``."""

    name: str
    path: str
    status: str          # ok | unverified (times changed) | damaged | quarantined
    size_bytes: int
    files: int
    archive_sha256: str | None
    source: str | None
    last_used: float | None
    detail: str = ""


_STATUS_DETAIL = {
    UNVERIFIED: "file times changed since the last check; `odzoo cache verify {name}` re-hashes it",
    DAMAGED: "files differ from the manifest; `odzoo cache verify {name}` repairs it",
}


def entry_info(layout: Layout, name: str) -> EntryInfo:
    """The cheap check's view of one entry (no hashing)."""
    entry = layout.entry(name)
    if entry.is_symlink():  # never published so: do not follow it anywhere
        return EntryInfo(name, str(entry), DAMAGED, 0, 0, None, None, None,
                         f"the entry is a symbolic link; `odzoo cache rm {name}` removes the link")
    state, manifest = entry_state(entry)
    try:
        used = os.stat(entry / MANIFEST_NAME).st_mtime
    except OSError:
        used = None
    if state == QUARANTINED:
        info = quarantine_info(entry) or {}
        detail = f"{info.get('reason', 'damaged')}; {repair_hint(name)}"
    else:
        detail = _STATUS_DETAIL.get(state, "").format(name=name)
    size = manifest.total_size() if manifest is not None and state in (OK, UNVERIFIED) else tree_size(entry)
    return EntryInfo(name, str(entry), state, size, len(manifest.files) if manifest else 0,
                     manifest.archive_sha256 if manifest else None,
                     manifest.source if manifest else None, used, detail)


def list_entries(layout: Layout) -> list[EntryInfo]:
    """Every published entry with the cheap check's verdict."""
    return [entry_info(layout, name) for name in layout.entry_names()]


def partial_downloads(layout: Layout) -> list[tuple[Path, int]]:
    """Partial download files and their sizes."""
    if not layout.downloads.is_dir():
        return []
    return sorted((p, p.stat().st_size) for p in layout.downloads.glob("*.part"))


def entry_name(layout: Layout, name: str) -> str:
    """The entry folder name for a user-given name (entry name, or registry name/alias)."""
    if layout.entry(name).is_dir() if _valid(name) else False:
        return name
    canonical = _registry_spec(name)
    if canonical is not None and layout.entry(canonical.name).is_dir():
        return canonical.name
    raise NotCachedError(f"{name} is not in the cache {layout.root}; `odzoo cache ls` lists what is")


def _registry_spec(name: str):
    try:
        from zoo.registry import get

        return get(name)
    except (ZooError, ImportError):
        return None


def _valid(name: str) -> bool:
    try:
        Layout(Path("/")).entry(name)
        return True
    except ZooError:
        return False


# -- verify -------------------------------------------------------------------------------------
@dataclass
class VerifyResult:
    """Outcome of ``verify`` for one entry: ok, repaired, damaged (not repaired: ``repair=False``)
    or quarantined (kept and marked: it could not be rebuilt)."""

    name: str
    status: str
    detail: str = ""
    extra_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def verify(layout: Layout, names: list[str] | None = None, *, repair: bool = True,
           offline: bool | None = None, show: bool = False) -> list[VerifyResult]:
    """Re-hash every file of the named entries (default: all).

    A whole entry is healthy: its file times are recorded again (so the cheap check passes) and
    a quarantine mark is lifted. A damaged entry is rebuilt from a kept archive or a new download
    that must match the archive digest it was built from, and published with one rename. What
    cannot be rebuilt is quarantined, never deleted. ``repair=False`` only reports."""
    offline = config.offline() if offline is None else offline
    names = [entry_name(layout, n) for n in names] if names else layout.entry_names()
    results = []
    for name in names:
        entry = layout.entry(name)
        with hold(layout, name, announce=show):
            inode = _inode(entry)
            report = full_verify(entry, name)
            manifest = None if entry.is_symlink() else read_manifest(entry)
            if report.ok and manifest is not None:
                changed = rerecord(entry, manifest)
                lifted = lift_quarantine(entry)
                note = "; ".join(n for n, did in (("file times recorded again", changed),
                                                  ("quarantine lifted", lifted)) if did)
                results.append(VerifyResult(name, "ok", note, extra_files=report.extra))
                continue
            quarantined = quarantine_info(entry) is not None
        problem = report.problems()
        if not repair:
            results.append(VerifyResult(name, QUARANTINED if quarantined else DAMAGED, problem))
            continue
        src, why_not = _repair_source(layout, name, manifest)
        if src is not None:
            try:
                ensure_entry(layout, src, offline=offline, show=show, force=True)
                results.append(VerifyResult(name, "repaired", problem))
                continue
            except ZooError as exc:
                why_not = f"repair failed: {exc}"
        results.append(_quarantine(layout, name, f"{problem}; {why_not}", inode))
    return results


def _inode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _repair_source(layout: Layout, name: str, manifest: Manifest | None) -> tuple[Source | None, str]:
    """Where a verified replacement can come from: the archive recorded in the manifest, or (with
    no manifest) the registry's archive when its digest is known. Else (None, why)."""
    if manifest is not None:
        return Source(name=name, url=manifest.source, sha256=manifest.archive_sha256,
                      size=manifest.archive_size, arg=name, registry_digest=True), ""
    spec = _registry_spec(name)
    if spec is None or spec.name != name:
        return None, "no manifest to rebuild it from"
    src = source_from_spec(spec)
    if src.sha256 is None:
        known = trust.recorded(layout, src.url)
        if known is None:
            return None, ("no manifest, and no digest known for its archive to check a new "
                          "download against")
        src = Source(name=name, url=src.url, sha256=known["sha256"], size=known.get("size"),
                     archive_top=src.archive_top, arg=name, registry_digest=True)
    return src, ""


def _quarantine(layout: Layout, name: str, reason: str, inode: int | None) -> VerifyResult:
    """Mark the entry verified as damaged (folder ``inode``), unless another process replaced it
    with a whole one meanwhile."""
    entry = layout.entry(name)
    with hold(layout, name):
        if _inode(entry) != inode and full_verify(entry, name).ok:
            return VerifyResult(name, "repaired", reason)
        if entry.is_dir() and not entry.is_symlink():
            quarantine(entry, reason)
    return VerifyResult(name, QUARANTINED, f"{reason}; kept in quarantine: {repair_hint(name)}")


# -- remove -------------------------------------------------------------------------------------
def remove(layout: Layout, name: str, *, forget_digest: bool = False,
           only_if: Callable[[Path], bool] | None = None) -> bool:
    """Delete an entry (under its lock); optionally forget the digest recorded for its URL.
    ``only_if(entry)`` is checked under the lock: the entry stays unless it returns True."""
    entry = layout.entry(name)
    with hold(layout, name):
        if only_if is not None and not only_if(entry):
            return False
        manifest = read_manifest(entry)
        existed = os.path.lexists(entry)
        if existed:
            aside = layout.tmp_for(name) / f"rm-{os.getpid()}-{time.time_ns()}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.rename(entry, aside)
            if aside.is_symlink():
                aside.unlink()
            else:
                shutil.rmtree(aside, ignore_errors=True)
        clean_stale_tmp(layout, name)
    if forget_digest and manifest is not None:
        trust.forget(layout, manifest.source)
    return existed


# -- prune --------------------------------------------------------------------------------------
@dataclass
class PruneItem:
    """Something prune removes (or would remove with --dry-run)."""

    kind: str  # partial | temp | unused | over-size | damaged | trace
    path: str
    size_bytes: int


def prune(layout: Layout, *, older_than_days: float | None = None, max_size: int | str | None = None,
          damaged: bool = False, dry_run: bool = False) -> list[PruneItem]:
    """Remove partial downloads and work folders nobody holds a lock for, and entries as asked:
    ``older_than_days``: healthy entries unused for that long; ``max_size``: least recently used
    healthy entries until the entries take at most that many bytes; ``damaged``: damaged and
    quarantined entries. Without ``damaged`` a damaged entry goes only when its verified archive
    is kept (it can be rebuilt). Changed file times alone never make an entry go. Stored traced
    graphs (``<cache>/traces``, rebuilt by the next load) go when the model folder they were traced
    from is gone, or when unused for ``older_than_days``."""
    cutoff = time.time() - parse_days(older_than_days) * 86400 if older_than_days is not None else None
    budget = parse_size(max_size) if max_size is not None else None
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
    entries = list_entries(layout)
    chosen: dict[str, str] = {}
    for info in entries:
        if info.status in (DAMAGED, QUARANTINED):
            if damaged or _rebuildable(layout, info):
                chosen[info.name] = "damaged"
        elif cutoff is not None and (info.last_used or 0) < cutoff:
            chosen[info.name] = "unused"
    if budget is not None:
        total = sum(i.size_bytes for i in entries if i.name not in chosen)
        for info in sorted(entries, key=lambda i: i.last_used or 0):
            if total <= budget:
                break
            if info.name not in chosen and info.status in (OK, UNVERIFIED):
                chosen[info.name] = "over-size"
                total -= info.size_bytes
    for info in entries:
        if info.name in chosen:
            items.append(PruneItem(chosen[info.name], info.path, info.size_bytes))
    items += _stale_traces(layout, cutoff, removed={info.path for info in entries if info.name in chosen})
    if not dry_run:
        for item in items:
            path = Path(item.path)
            if item.kind in ("unused", "over-size", "damaged"):
                remove(layout, path.name, only_if=_still(item.kind, cutoff, damaged, layout))
            elif item.kind == "trace":
                from zoo.backends.stored_trace import TraceStore

                TraceStore(layout.root).discard(path.name)
            elif item.kind == "partial":
                path.unlink(missing_ok=True)
                path.with_name(path.name + ".json").unlink(missing_ok=True)
            elif path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    return items


def _stale_traces(layout: Layout, cutoff: float | None, removed: set[str]) -> list[PruneItem]:
    """Stored traced graphs whose model folder is gone (or being pruned), or unused since ``cutoff``."""
    from zoo.backends.stored_trace import TraceStore

    items = []
    for trace in TraceStore(layout.root).entries():
        model = trace.model_folder
        orphaned = model is None or str(model) in removed or not (model / "pipeline.config").is_file()
        if orphaned or (cutoff is not None and trace.last_used < cutoff):
            items.append(PruneItem("trace", str(trace.folder), trace.size_bytes))
    return items


def _rebuildable(layout: Layout, info: EntryInfo) -> bool:
    """A damaged entry can be rebuilt offline when its verified archive is kept and a load would
    accept that archive (the registry or a trusted record names its digest)."""
    digest = info.archive_sha256
    if not digest or not layout.archive(digest).is_file():
        return False
    spec = _registry_spec(info.name)
    if spec is not None and spec.name == info.name and spec.url == info.source and spec.sha256:
        return spec.sha256.lower() == digest
    known = trust.recorded(layout, info.source) if info.source else None
    return known is not None and known["sha256"] == digest


def _still(kind: str, cutoff: float | None, damaged: bool, layout: Layout) -> Callable[[Path], bool]:
    """Re-check, under the entry's lock, the reason an entry was chosen (it may have been used or
    repaired since it was listed)."""
    def check(entry: Path) -> bool:
        info = entry_info(layout, entry.name)
        if kind == "damaged":
            return info.status in (DAMAGED, QUARANTINED) and (damaged or _rebuildable(layout, info))
        if info.status not in (OK, UNVERIFIED):
            return False
        return kind != "unused" or cutoff is None or (info.last_used or 0) < cutoff
    return check


def _part_in_use(layout: Layout, part: Path) -> bool:
    """A .part (``<name>@<key>.part``) is in use while its entry's lock is held."""
    name = part.name.split("@", 1)[0]
    if "@" in part.name and _valid(name):
        return is_held(layout, name)
    return False
