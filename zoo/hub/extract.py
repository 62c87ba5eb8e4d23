"""Safe tar extraction with our own member checks (no reliance on tarfile's filters).

Rejected with UnsafeArchiveError, leaving nothing behind: absolute names, ``..`` components,
backslashes or NUL in names, duplicate names, members outside the archive's top folder, symlinks or
hard links whose target leaves the top folder, devices, FIFOs and other special members, and
archives beyond the member-count, total-size or expansion-ratio limits (checked on each header,
before its data is read). Not enough free disk space for what the headers announce is a CacheError.

Damage is a DamagedArchiveError: the compressed stream (gzip, bz2, xz) is decoded by us and read to
its very end, so its CRC and length trailers are checked; a tar whose headers stop before the
end-of-archive blocks, or that is followed by anything but zero padding, is truncated or damaged.
Files are streamed once: each is written and hashed in the same pass, so the entry manifest costs no
extra read.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import posixpath
import shutil
import tarfile
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from zoo.errors import CacheError, DamagedArchiveError, UnsafeArchiveError
from zoo.hub.cache import FileRecord
from zoo.hub.progress import bar

MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 64 << 30  # the largest zoo archives unpack to a few GB
MAX_RATIO = 20.0            # zoo archives (float weights) unpack to 1.1-1.5x their size
RATIO_FLOOR_BYTES = 64 << 20  # small archives of text may expand more; this much is always allowed
KEEP_FREE_BYTES = 64 << 20    # free space left on the cache's disk after unpacking
_BLOCK = 1 << 20
_TAR_END = 2 * tarfile.BLOCKSIZE  # a tar ends with two zero blocks
_KEEP_RECENT = 4 * _BLOCK         # more than tarfile reads ahead (its buffer is _BLOCK)
_CODEC_ERRORS = (OSError, zlib.error, lzma.LZMAError)


@dataclass
class Limits:
    """Upper bounds an archive must respect.

    ``max_total_bytes``: unpacked bytes at most; ``max_ratio``: unpacked bytes at most this many
    times the archive's size, except that ``ratio_floor_bytes`` are always allowed;
    ``keep_free_bytes``: free space that must remain on the destination's disk (None: no check).
    """

    max_members: int = MAX_MEMBERS
    max_total_bytes: int = MAX_TOTAL_BYTES
    max_ratio: float = MAX_RATIO
    ratio_floor_bytes: int = RATIO_FLOOR_BYTES
    keep_free_bytes: int | None = KEEP_FREE_BYTES

    def allowance(self, archive_size: int) -> tuple[int, str]:
        """Unpacked bytes allowed for an archive of ``archive_size`` bytes, and why."""
        by_ratio = max(int(self.max_ratio * archive_size), self.ratio_floor_bytes)
        if by_ratio < self.max_total_bytes:
            return by_ratio, (f"{self.max_ratio:g}x its {archive_size} bytes "
                              "(Limits.max_ratio); a decompression bomb?")
        return self.max_total_bytes, "Limits.max_total_bytes"


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


def _decoder(fh, magic: bytes) -> tuple[BinaryIO, str]:
    """A reader of the decompressed stream (by magic bytes, not by name) and the codec's name."""
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=fh, mode="rb"), "gzip"
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(fh, mode="rb"), "bz2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(fh, mode="rb", format=lzma.FORMAT_XZ), "xz"
    return fh, "tar"


class _Decoded:
    """The decompressed tar stream as tarfile reads it: codec errors become DamagedArchiveError,
    the stream length is bounded, and the most recent bytes are kept so that what follows the
    tar's last header can be examined after tarfile stops."""

    def __init__(self, fh: BinaryIO, codec: str, archive: str, cap: int, why: str) -> None:
        self._fh, self.codec, self._archive = fh, codec, archive
        self._cap, self._why = cap, why
        self.pos = 0
        self._recent: deque[bytes] = deque()
        self._recent_bytes = 0

    def read(self, n: int = -1) -> bytes:
        try:
            data = self._fh.read(n)
        except EOFError:
            raise DamagedArchiveError(f"{self._archive}: truncated {self.codec} stream (the file "
                                      "ends before its end-of-stream marker)") from None
        except _CODEC_ERRORS as exc:
            raise DamagedArchiveError(f"{self._archive}: damaged {self.codec} stream "
                                      f"({exc or type(exc).__name__})") from None
        self.pos += len(data)
        if self.pos > self._cap:
            raise UnsafeArchiveError(f"{self._archive}: unpacks to more than {self._cap} bytes "
                                     f"({self._why})")
        if data:
            self._recent.append(data)
            self._recent_bytes += len(data)
            while self._recent_bytes - len(self._recent[0]) >= _KEEP_RECENT:
                self._recent_bytes -= len(self._recent.popleft())
        return data

    def since(self, offset: int) -> bytes:
        """The bytes from ``offset`` to the current position (they must still be kept)."""
        start = self.pos - self._recent_bytes
        if offset < start:
            raise DamagedArchiveError(f"{self._archive}: tar stream position {offset} is behind "
                                      "what was read; the archive is damaged")
        return b"".join(self._recent)[offset - start:]

    def check_end(self, offset: int) -> None:
        """What follows the tar's last member (from ``offset``) must be its end-of-archive blocks
        and zero padding up to the end of the stream; reading to the end checks the codec's trailer
        (gzip CRC32 and length, bz2 and xz checks) and any further gzip members."""
        rest = self.since(offset)
        seen = len(rest)
        if rest.count(0) != len(rest):
            raise DamagedArchiveError(f"{self._archive}: damaged or not a whole tar archive "
                                      f"(unreadable data at byte {offset} of the {self.codec} stream)")
        while True:
            block = self.read(_BLOCK)
            if not block:
                break
            if block.count(0) != len(block):
                raise DamagedArchiveError(f"{self._archive}: unexpected data after the end of the tar "
                                          "archive; the archive is damaged")
            seen += len(block)
        if seen < _TAR_END:
            raise DamagedArchiveError(f"{self._archive}: truncated tar archive (no end-of-archive "
                                      f"marker after byte {offset}); the download is incomplete")


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
    """Extract ``archive`` (tar, optionally gzip/bz2/xz compressed) so that the contents of its top
    folder land in ``dest`` (created; must not exist). The top folder is the first member's first
    component (zoo archives: ``<archive_top>/...``, which may differ from the model name); every
    other member must lie inside it. An archive whose first member is a plain file is extracted
    flat. On any violation ``dest`` is removed and UnsafeArchiveError (hostile or beyond the
    limits), DamagedArchiveError (codec error, truncated or damaged tar) or CacheError (no room)
    is raised."""
    limits = limits or Limits()
    name = str(archive)
    size = os.path.getsize(archive)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with open(archive, "rb") as raw, bar(show, desc=f"extract {label}", total=size) as pb:
            magic = raw.read(6)
            raw.seek(0)
            codec_in, codec = _decoder(_Counting(raw, pb), magic)
            cap, why = limits.allowance(size)
            stream = _Decoded(codec_in, codec, name, cap, why)
            result = _extract_stream(stream, dest, limits, name, cap, why)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return result


class _Budget:
    """Unpacked bytes so far against the size limits and the free space of the destination."""

    def __init__(self, dest: Path, limits: Limits, archive: str, cap: int, why: str) -> None:
        self.total = 0
        self._archive, self._cap, self._why = archive, cap, why
        self._room: int | None = None
        if limits.keep_free_bytes is not None:
            self._room = shutil.disk_usage(dest).free - limits.keep_free_bytes
        self._dest = dest

    def add(self, nbytes: int) -> None:
        self.total += nbytes
        if self.total > self._cap:
            raise UnsafeArchiveError(f"{self._archive}: unpacks to more than {self._cap} bytes "
                                     f"({self._why})")
        if self._room is not None and self.total > self._room:
            raise CacheError(f"not enough free space to unpack {self._archive}: it needs more than "
                             f"{max(self._room, 0)} bytes available in {self._dest.parent} "
                             "(Limits.keep_free_bytes kept free); free some space or set "
                             "ODZOO_CACHE to a larger disk")


def _extract_stream(stream: _Decoded, dest: Path, limits: Limits, archive: str, cap: int,
                    why: str) -> Extracted:
    try:
        tar = tarfile.open(fileobj=stream, mode="r|", bufsize=_BLOCK)  # noqa: SIM115 - closed below
    except tarfile.TarError as exc:
        raise DamagedArchiveError(f"{archive}: not a readable tar archive ({exc}); "
                                  "the file is damaged or not a model archive") from None
    result = Extracted(None)
    seen: set[str] = set()
    files: dict[str, FileRecord] = {}
    links: list[tuple[str, str]] = []
    budget = _Budget(dest, limits, archive, cap, why)
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
                _write(lambda: (dest / rel).mkdir(parents=True, exist_ok=True), dest / rel)
                result.dirs.append(rel)
            elif member.isreg():
                budget.add(member.size)
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
                budget.add(src.size)
                _write(lambda: _copy(dest / target_rel, dest / rel), dest / rel)
                rec = FileRecord(rel, src.size, src.sha256, os.stat(dest / rel).st_mtime_ns)
                files[rel] = rec
                result.files.append(rec)
            else:
                kind = ("device" if (member.ischr() or member.isblk()) else
                        "FIFO" if member.isfifo() else f"type {member.type!r}")
                raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a {kind}; "
                                         "model archives hold only files and folders")
        stream.check_end(tar.offset)
    except tarfile.TarError as exc:
        raise DamagedArchiveError(f"{archive}: corrupt or truncated tar archive ({exc}); "
                                  "the file is damaged") from None
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


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _write(action, path: Path) -> None:
    """Run a filesystem write; its failure (disk full, permissions) is a CacheError."""
    try:
        action()
    except OSError as exc:
        raise _write_error(path, exc) from None


def _write_error(path: Path, exc: OSError) -> CacheError:
    return CacheError(f"cannot write {path}: {exc.strerror or exc}; free some space or set "
                      "ODZOO_CACHE to a writable folder on a larger disk")


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
    _write(lambda: path.parent.mkdir(parents=True, exist_ok=True), path.parent)
    src = tar.extractfile(member)
    if src is None:
        raise UnsafeArchiveError(f"{archive}: cannot read member {member.name!r}")
    digest = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise _write_error(path, exc) from None
    with os.fdopen(fd, "wb") as out:
        while True:
            block = src.read(_BLOCK)
            if not block:
                break
            try:
                out.write(block)
            except OSError as exc:
                raise _write_error(path, exc) from None
            digest.update(block)
            size += len(block)
    if size != member.size:
        raise DamagedArchiveError(f"{archive}: member {member.name!r} is truncated")
    os.chmod(path, 0o755 if member.mode & 0o111 else 0o644)
    if member.mtime:
        os.utime(path, (member.mtime, member.mtime))
    return FileRecord(rel, size, digest.hexdigest(), os.stat(path).st_mtime_ns)
