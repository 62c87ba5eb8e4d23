"""On-disk layout of the cache, entry manifests, and the cheap and full entry checks.

    <cache>/models/<name>/                 whole entries only (published by one atomic rename)
    <cache>/models/<name>/.odzoo-manifest.json
    <cache>/downloads/<name>@<key>.part    partial downloads (+ .part.json for resuming); <key> is
                                           the expected sha256, or a hash of the URL
    <cache>/archives/<sha256>.tar.gz       verified archives, kept only with ODZOO_KEEP_ARCHIVES=1
    <cache>/tmp/<name>/<random>/           extraction and import work folders
    <cache>/locks/<name>.lock              one lock per entry (OS locks: released if a process dies)
    <cache>/digests.json                   sha256 of first downloads, per URL ("trust on first use")
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import CacheError

MANIFEST_NAME = ".odzoo-manifest.json"
MANIFEST_FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
HASH_BLOCK = 4 << 20


def check_name(name: str) -> str:
    """Return ``name`` if it is usable as an entry folder name, else raise CacheError."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise CacheError(
            f"{name!r} cannot name a cache entry: use letters, digits, '.', '_', '+' or '-' "
            "(starting with a letter or digit)"
        )
    return name


def sha256_file(path: Path, block: int = HASH_BLOCK) -> str:
    """Hex sha256 of a file, read in large blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


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
    target = folder / MANIFEST_NAME
    tmp = folder / f"{MANIFEST_NAME}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest.to_json(), fh, separators=(",", ":"))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


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


def quick_check(folder: Path) -> Manifest | None:
    """Cheap check used on every load: manifest readable, each file present with its recorded size
    and mtime, symlinks unchanged. No hashing. Returns the manifest, or None if anything differs."""
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    try:
        for rec in manifest.files:
            st = os.stat(os.path.join(folder, rec.path), follow_symlinks=False)
            if st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
                return None
        for link, target in manifest.symlinks.items():
            if os.readlink(os.path.join(folder, link)) != target:
                return None
    except OSError:
        return None
    return manifest


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
    manifest = read_manifest(folder)
    if manifest is None:
        return VerifyReport(name, False, reason=f"manifest {MANIFEST_NAME} missing or unreadable")
    report = VerifyReport(name, True)
    for rec in manifest.files:
        path = folder / rec.path
        try:
            if path.is_symlink() or path.stat().st_size != rec.size or sha256_file(path) != rec.sha256:
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
    known.add(MANIFEST_NAME)
    for path in iter_tree(folder):
        if path not in known:
            report.extra.append(path)
    report.ok = not (report.missing or report.corrupt)
    return report


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
