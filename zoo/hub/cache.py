"""On-disk layout of the cache, entry manifests, and the cheap and full entry checks.

    <cache>/models/<name>/                 whole entries only (published by one atomic rename)
    <cache>/models/<name>/.odzoo-manifest.json
    <cache>/models/<name>/.odzoo-quarantine.json  present while a damaged entry awaits repair
    <cache>/downloads/<name>@<key>.part    partial downloads (+ .part.json for resuming); <key> is
                                           the expected sha256, or a hash of the URL
    <cache>/archives/<sha256>.tar.gz       verified archives, kept only with ODZOO_KEEP_ARCHIVES=1
    <cache>/tmp/<name>/<random>/           extraction and import work folders
    <cache>/locks/<name>.lock              one lock per entry (OS locks: released if a process dies)
    <cache>/digests.json                   sha256 of first downloads, per URL ("trust on first use")
    <cache>/traces/<key>/                  traced keras-backend graphs (zoo.backends.stored_trace; rebuilt
                                           when absent)
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import CacheError
from zoo.files import file_sha256, write_json_atomic

MANIFEST_NAME = ".odzoo-manifest.json"
QUARANTINE_NAME = ".odzoo-quarantine.json"
MANIFEST_FORMAT = 1

# What the cheap check says about an entry (no hashing):
OK = "ok"                    # every file has its recorded size and time
UNVERIFIED = "unverified"    # sizes match but times changed (copied, restored, touched): re-hash it
DAMAGED = "damaged"          # a file is missing or resized, a link changed, or no readable manifest
QUARANTINED = "quarantined"  # verified damaged and not repairable yet: kept, never served
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is usable as an entry folder name, else raise CacheError."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise CacheError(
            f"{name!r} cannot name a cache entry: use letters, digits, '.', '_', '+' or '-' "
            "(starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class Layout:
    """Paths inside one cache root."""

    root: Path

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def archives(self) -> Path:
        return self.root / "archives"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / "locks"

    @property
    def digests(self) -> Path:
        return self.root / "digests.json"

    def entry(self, name: str) -> Path:
        return self.models / check_name(name)

    def manifest(self, name: str) -> Path:
        return self.entry(name) / MANIFEST_NAME

    def tmp_for(self, name: str) -> Path:
        return self.tmp / check_name(name)

    def lock(self, name: str) -> Path:
        return self.locks / f"{check_name(name)}.lock"

    def archive(self, sha256: str) -> Path:
        return self.archives / f"{sha256}.tar.gz"

    def ensure(self) -> Layout:
        """Create the top-level folders."""
        for folder in (self.models, self.downloads, self.tmp, self.locks):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheError(f"cannot create {folder}: {exc.strerror or exc}; "
                                 "check permissions or set ODZOO_CACHE") from exc
        return self

    def entry_names(self) -> list[str]:
        """Names of the published entries (folders in models/ not starting with '.')."""
        if not self.models.is_dir():
            return []
        return sorted(p.name for p in self.models.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and _NAME_RE.match(p.name))


@dataclass
class FileRecord:
    """One regular file of an entry (path relative to the entry, POSIX separators)."""

    path: str
    size: int
    sha256: str
    mtime_ns: int = 0


@dataclass
class Manifest:
    """What an entry holds: its files and the archive it was extracted from."""

    name: str
    source: str
    archive_sha256: str
    archive_size: int
    archive_top: str | None
    files: list[FileRecord]
    dirs: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    origin: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "source": self.source,
            "archive": {"sha256": self.archive_sha256, "size": self.archive_size,
                        "top": self.archive_top},
            "created": self.created,
            "origin": self.origin,
            "dirs": self.dirs,
            "symlinks": self.symlinks,
            "files": [[f.path, f.size, f.sha256, f.mtime_ns] for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        archive = data["archive"]
        return cls(
            name=str(data["name"]), source=str(data["source"]),
            archive_sha256=str(archive["sha256"]), archive_size=int(archive["size"]),
            archive_top=archive.get("top"),
            files=[FileRecord(str(p), int(s), str(h), int(m)) for p, s, h, m in data["files"]],
            dirs=[str(d) for d in data.get("dirs", [])],
            symlinks={str(k): str(v) for k, v in data.get("symlinks", {}).items()},
            created=float(data.get("created", 0.0)), origin=dict(data.get("origin", {})),
        )

    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``folder/.odzoo-manifest.json`` atomically (temp file + rename)."""
    write_json_atomic(folder / MANIFEST_NAME, manifest.to_json(), separators=(",", ":"))


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of an entry folder, or None when it is missing or unreadable."""
    try:
        with open(folder / MANIFEST_NAME, "rb") as fh:
            return Manifest.from_json(json.loads(fh.read()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refresh_mtimes(folder: Path, manifest: Manifest) -> None:
    """Record the current mtimes of the files (after their content has been verified)."""
    for rec in manifest.files:
        rec.mtime_ns = os.stat(folder / rec.path).st_mtime_ns


def rerecord(folder: Path, manifest: Manifest) -> bool:
    """After a full verification: store the files' current mtimes in the manifest so the cheap check
    passes again. The manifest keeps its own mtime (the entry's "last used" time). Returns True when
    something changed."""
    before = [rec.mtime_ns for rec in manifest.files]
    refresh_mtimes(folder, manifest)
    if before == [rec.mtime_ns for rec in manifest.files]:
        return False
    try:
        used = os.stat(folder / MANIFEST_NAME)
        times = (used.st_atime_ns, used.st_mtime_ns)
    except OSError:
        times = None
    write_manifest(folder, manifest)
    if times is not None:
        os.utime(folder / MANIFEST_NAME, ns=times)
    return True


def entry_state(folder: Path) -> tuple[str, Manifest | None]:
    """The cheap check's verdict on an entry (OK, UNVERIFIED, DAMAGED or QUARANTINED) and its
    manifest (None when unreadable). Reads only the manifest and file metadata."""
    manifest = read_manifest(folder)
    if os.path.lexists(os.path.join(folder, QUARANTINE_NAME)):
        return QUARANTINED, manifest
    if manifest is None:
        return DAMAGED, None
    state = OK
    try:
        for rec in manifest.files:
            st = os.stat(os.path.join(folder, rec.path), follow_symlinks=False)
            if st.st_size != rec.size or not stat.S_ISREG(st.st_mode):
                return DAMAGED, manifest
            if st.st_mtime_ns != rec.mtime_ns:
                state = UNVERIFIED
        for link, target in manifest.symlinks.items():
            if os.readlink(os.path.join(folder, link)) != target:
                return DAMAGED, manifest
    except OSError:
        return DAMAGED, manifest
    return state, manifest


def quick_check(folder: Path) -> Manifest | None:
    """Cheap check used on every load: manifest readable, each file present with its recorded size
    and mtime, symlinks unchanged, not quarantined. No hashing. Returns the manifest, or None if
    anything differs."""
    state, manifest = entry_state(folder)
    return manifest if state == OK else None


def quarantine_info(folder: Path) -> dict | None:
    """The quarantine record of an entry (``{"reason", "since"}``), or None when not quarantined."""
    path = Path(folder) / QUARANTINE_NAME
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict):
        data = {}
    return {"reason": str(data.get("reason") or "damaged"), "since": data.get("since")}


def quarantine(folder: Path, reason: str) -> None:
    """Mark an entry as damaged and kept for repair: loads refuse it, nothing deletes it unasked."""
    write_json_atomic(folder / QUARANTINE_NAME,
                      {"reason": " ".join(reason.split()), "since": time.time()})


def lift_quarantine(folder: Path) -> bool:
    """Remove the quarantine mark (after the entry verified whole); True if there was one."""
    try:
        (folder / QUARANTINE_NAME).unlink()
        return True
    except FileNotFoundError:
        return False


def repair_hint(name: str) -> str:
    """How a user repairs or deletes a damaged entry."""
    return (f"repair it with `odzoo download {name} --force` (online) or `odzoo import bundle.tar` "
            f"(a bundle packed where it is whole), or delete it with `odzoo cache rm {name}`")


def quarantine_message(name: str, folder: Path) -> str | None:
    """One line for a load of a quarantined entry, or None when ``folder`` is not quarantined."""
    info = quarantine_info(folder)
    if info is None:
        return None
    return (f"{name} is quarantined in the cache ({folder}): {info['reason']}; it is kept but not "
            f"loaded; {repair_hint(name)}")


@dataclass
class VerifyReport:
    """Outcome of re-hashing one entry."""

    name: str
    ok: bool
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    reason: str = ""

    def problems(self) -> str:
        parts = []
        if self.reason:
            parts.append(self.reason)
        if self.missing:
            parts.append(f"missing: {', '.join(self.missing[:5])}")
        if self.corrupt:
            parts.append(f"corrupt: {', '.join(self.corrupt[:5])}")
        return "; ".join(parts) or "ok"


def full_verify(folder: Path, name: str | None = None) -> VerifyReport:
    """Re-hash every file of an entry against its manifest (slow, thorough)."""
    name = name or folder.name
    if folder.is_symlink():
        return VerifyReport(name, False, reason="the entry folder is a symbolic link")
    manifest = read_manifest(folder)
    if manifest is None:
        return VerifyReport(name, False, reason=f"manifest {MANIFEST_NAME} missing or unreadable")
    report = VerifyReport(name, True)
    for rec in manifest.files:
        path = folder / rec.path
        try:
            if path.is_symlink() or path.stat().st_size != rec.size or file_sha256(path) != rec.sha256:
                report.corrupt.append(rec.path)
        except OSError:
            report.missing.append(rec.path)
    for link, target in manifest.symlinks.items():
        try:
            if os.readlink(folder / link) != target:
                report.corrupt.append(link)
        except OSError:
            report.missing.append(link)
    known = {r.path for r in manifest.files} | set(manifest.symlinks) | set(manifest.dirs)
    known.update((MANIFEST_NAME, QUARANTINE_NAME))
    for path in iter_tree(folder):
        if path not in known:
            report.extra.append(path)
    leaving = links_leaving(folder)
    if leaving:
        report.reason = f"links leaving the entry: {', '.join(leaving[:5])}"
    report.ok = not (report.missing or report.corrupt or leaving)
    return report


def links_leaving(folder: Path) -> list[str]:
    """Symbolic links under ``folder`` that resolve outside it (or dangle outside it)."""
    root = os.path.realpath(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for item in dirnames + filenames:
            path = os.path.join(dirpath, item)
            if os.path.islink(path):
                resolved = os.path.realpath(path)
                if resolved != root and not resolved.startswith(root + os.sep):
                    out.append(os.path.relpath(path, folder).replace(os.sep, "/"))
    return sorted(out)


def iter_tree(folder: Path) -> Iterator[str]:
    """Relative POSIX paths of everything under ``folder`` (files, links and folders)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        for item in dirnames + filenames:
            yield item if rel == "." else f"{rel}/{item}".replace(os.sep, "/")


def tree_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder``."""
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for item in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, item)).st_size
            except OSError:
                pass
    return total
