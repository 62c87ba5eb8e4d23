"""Safe tar extraction with our own member checks (no reliance on tarfile's filters).

Rejected with UnsafeArchiveError, leaving nothing behind: absolute names, ``..`` components,
backslashes or NUL in names, duplicate names, members outside the archive's top folder, symlinks or
hard links whose target leaves the top folder, devices, FIFOs and other special members, and
archives beyond the member-count or total-size limits. Files are streamed once: each is written
and hashed in the same pass, so the entry manifest costs no extra read.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from zoo.errors import UnsafeArchiveError
from zoo.hub.cache import FileRecord
from zoo.hub.progress import bar

MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 64 << 30  # the largest zoo archives unpack to a few GB
_BLOCK = 1 << 20


@dataclass
class Limits:
    """Upper bounds an archive must respect."""

    max_members: int = MAX_MEMBERS
    max_total_bytes: int = MAX_TOTAL_BYTES


@dataclass
class Extracted:
    """What was written: records relative to the destination folder."""

    top: str | None
    files: list[FileRecord] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    symlinks: dict[str, str] = field(default_factory=dict)


class _Counting:
    """File wrapper that reports bytes read to a progress bar."""

    def __init__(self, fh: BinaryIO, pb) -> None:
        self._fh, self._pb = fh, pb

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self._pb.update(len(data))
        return data


def _clean_name(name: str, archive: str) -> str:
    if "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL or backslash in its name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'")
    if not parts:
        return ""
    return "/".join(parts)


def _inside(rel: str) -> bool:
    """True when a normalized relative POSIX path stays inside its root."""
    norm = posixpath.normpath(rel)
    return not (norm == ".." or norm.startswith(("../", "/")))


def extract(archive: Path, dest: Path, *, limits: Limits | None = None, show: bool = False,
            label: str = "") -> Extracted:
    """Extract ``archive`` (tar, optionally compressed) so that the contents of its top folder land
    in ``dest`` (created; must not exist). The top folder is the first member's first component
    (zoo archives: ``<archive_top>/...``, which may differ from the model name); every other member
    must lie inside it. An archive whose first member is a plain file is extracted flat. On any
    violation ``dest`` is removed and UnsafeArchiveError raised."""
    limits = limits or Limits()
    name = str(archive)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with open(archive, "rb") as raw, \
                bar(show, desc=f"extract {label}", total=os.path.getsize(archive)) as pb:
            result = _extract_stream(_Counting(raw, pb), dest, limits, name)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return result


def _extract_stream(fh, dest: Path, limits: Limits, archive: str) -> Extracted:
    try:
        tar = tarfile.open(fileobj=fh, mode="r|*")  # noqa: SIM115 - closed in the finally below
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"{archive}: not a readable tar archive ({exc})") from None
    result = Extracted(None)
    seen: set[str] = set()
    files: dict[str, FileRecord] = {}
    links: list[tuple[str, str]] = []
    total = 0
    count = 0
    detected: str | None = None
    pending_top_strip = True
    try:
        for member in tar:
            count += 1
            if count > limits.max_members:
                raise UnsafeArchiveError(f"{archive}: more than {limits.max_members} members")
            rel = _clean_name(member.name, archive)
            if not rel:
                continue
            if pending_top_strip:
                flat = "/" not in rel and not member.isdir()
                detected = None if flat else rel.split("/", 1)[0]
                pending_top_strip = False
                result.top = detected
            rel = _strip_top(rel, detected, member, archive)
            if rel is None:
                continue  # the top folder itself
            if rel in seen:
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} appears twice")
            seen.add(rel)
            if member.isdir():
                (dest / rel).mkdir(parents=True, exist_ok=True)
                result.dirs.append(rel)
            elif member.isreg():
                total += member.size
                if total > limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        f"{archive}: unpacks to more than {limits.max_total_bytes} bytes")
                files[rel] = _write_member(tar, member, dest, rel, archive)
                result.files.append(files[rel])
            elif member.issym():
                target = member.linkname
                if target.startswith("/") or not _inside(posixpath.join(posixpath.dirname(rel), target)):
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {member.name!r} -> {target!r} leaves the archive folder")
                links.append((rel, target))
            elif member.islnk():
                target = _clean_name(member.linkname, archive)
                target_rel = _strip_top(target, detected, None, archive) if target else None
                if target_rel is None or target_rel not in files:
                    raise UnsafeArchiveError(
                        f"{archive}: hard link {member.name!r} -> {member.linkname!r} does not "
                        "point to a file earlier in the archive folder")
                src = files[target_rel]
                total += src.size
                if total > limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        f"{archive}: unpacks to more than {limits.max_total_bytes} bytes")
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(dest / target_rel, dest / rel)
                rec = FileRecord(rel, src.size, src.sha256, os.stat(dest / rel).st_mtime_ns)
                files[rel] = rec
                result.files.append(rec)
            else:
                kind = ("device" if (member.ischr() or member.isblk()) else
                        "FIFO" if member.isfifo() else f"type {member.type!r}")
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a {kind}; "
                                         "model archives hold only files and folders")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise UnsafeArchiveError(f"{archive}: corrupt or truncated archive ({exc})") from None
    finally:
        tar.close()
    for rel, target in links:
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            raise UnsafeArchiveError(f"{archive}: symlink {rel!r} collides with another member")
        os.symlink(target, path)
        result.symlinks[rel] = target
    root = os.path.realpath(dest)
    for rel in result.symlinks:  # links through links: resolve for real, not just lexically
        resolved = os.path.realpath(dest / rel)
        if resolved != root and not resolved.startswith(root + os.sep):
            raise UnsafeArchiveError(f"{archive}: symlink {rel!r} resolves outside the archive folder")
    return result


def _strip_top(rel: str, top: str | None, member, archive: str) -> str | None:
    """Path relative to the top folder; None for the top folder itself."""
    if top is None or top == "":
        return rel
    if rel == top:
        if member is not None and not member.isdir():
            raise UnsafeArchiveError(f"{archive}: top-level member {rel!r} is not a folder")
        return None
    if not rel.startswith(top + "/"):
        raise UnsafeArchiveError(
            f"{archive}: member {rel!r} is outside the archive's top folder {top!r}")
    return rel[len(top) + 1:]


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, rel: str,
                  archive: str) -> FileRecord:
    path = dest / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    if src is None:
        raise UnsafeArchiveError(f"{archive}: cannot read member {member.name!r}")
    digest = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as out:
        while True:
            block = src.read(_BLOCK)
            if not block:
                break
            out.write(block)
            digest.update(block)
            size += len(block)
    if size != member.size:
        raise UnsafeArchiveError(f"{archive}: member {member.name!r} is truncated")
    os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)
    if member.mtime:
        os.utime(path, (member.mtime, member.mtime))
    return FileRecord(rel, size, digest.hexdigest(), os.stat(path).st_mtime_ns)
