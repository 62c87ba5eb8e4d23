"""Air-gapped transfer: ``pack`` whole cache entries into one tar, ``import_bundle`` them elsewhere.

A bundle is an uncompressed tar: ``odzoo-bundle.json`` then ``models/<name>/...`` (each entry with
its manifest). Import extracts it with the same member checks as downloads, re-hashes every file
against its manifest, checks the archive digest against the registry and the digests recorded on
first use, and publishes each entry with one rename.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from zoo.errors import IntegrityError, NotCachedError, UnsafeArchiveError, ZooError
from zoo.hub import trust
from zoo.hub.cache import (
    MANIFEST_NAME,
    Layout,
    check_name,
    full_verify,
    quick_check,
    read_manifest,
    refresh_mtimes,
    write_manifest,
)
from zoo.hub.extract import extract
from zoo.hub.fetch import publish
from zoo.hub.lock import clean_stale_tmp, hold
from zoo.hub.maintenance import entry_name

BUNDLE_INDEX = "odzoo-bundle.json"
BUNDLE_FORMAT = 1
_IMPORT_LOCK = "odzoo-import"


@dataclass
class BundleItem:
    """One entry packed or imported."""

    name: str
    status: str  # packed | imported | replaced | skipped
    archive_sha256: str
    size_bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def pack(layout: Layout, names: list[str], out: Path, *, show: bool = False) -> list[BundleItem]:
    """Write the named entries (re-hashed first: only whole entries travel) to the tar ``out``."""
    items = []
    folders = []
    for raw in names:
        name = entry_name(layout, raw)
        with hold(layout, name, announce=show):
            report = full_verify(layout.entry(name), name)
        if not report.ok:
            raise IntegrityError(f"{name} is damaged in the cache ({report.problems()}); "
                                 "run `odzoo cache verify` before packing it")
        manifest = read_manifest(layout.entry(name))
        assert manifest is not None
        items.append(BundleItem(name, "packed", manifest.archive_sha256, manifest.total_size()))
        folders.append(name)
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    index = {"format": BUNDLE_FORMAT, "created": time.time(), "entries": folders}
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            data = json.dumps(index, indent=1).encode()
            info = tarfile.TarInfo(BUNDLE_INDEX)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
            for name in folders:
                with hold(layout, name, announce=show):
                    tar.add(layout.entry(name), arcname=f"models/{name}", filter=_plain)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return items


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def import_bundle(layout: Layout, bundle: Path, *, force: bool = False, show: bool = False) -> list[BundleItem]:
    """Install every entry of a bundle written by :func:`pack`; returns what happened to each."""
    bundle = bundle.expanduser()
    if not bundle.is_file():
        raise NotCachedError(f"{bundle}: no such bundle file")
    with hold(layout, _IMPORT_LOCK, announce=show):
        clean_stale_tmp(layout, _IMPORT_LOCK)
        work = layout.tmp_for(_IMPORT_LOCK) / uuid.uuid4().hex
        work.parent.mkdir(parents=True, exist_ok=True)
        try:
            extract(bundle, work, show=show, label=bundle.name)
            return _install_all(layout, work, bundle, force=force, show=show)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _install_all(layout: Layout, work: Path, bundle: Path, *, force: bool, show: bool) -> list[BundleItem]:
    try:
        index = json.loads((work / BUNDLE_INDEX).read_text(encoding="utf-8"))
        names = [check_name(str(n)) for n in index["entries"]]
        if index.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format {index.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError, ZooError) as exc:
        raise UnsafeArchiveError(f"{bundle} is not an odzoo bundle ({BUNDLE_INDEX}: {exc}); "
                                 "create bundles with `odzoo pack`") from None
    present = sorted(p.name for p in (work / "models").iterdir()) if (work / "models").is_dir() else []
    if sorted(names) != present:
        raise UnsafeArchiveError(f"{bundle}: its index lists {names} but it holds {present}")
    checked = [(name, _check_entry(layout, work / "models" / name, name, bundle)) for name in names]
    items = []
    for name, manifest in checked:
        folder = work / "models" / name
        with hold(layout, name, announce=show):
            current = quick_check(layout.entry(name))
            if current is not None and current.archive_sha256 == manifest.archive_sha256 and not force:
                items.append(BundleItem(name, "skipped", manifest.archive_sha256, manifest.total_size()))
                continue
            status = "replaced" if layout.entry(name).exists() else "imported"
            refresh_mtimes(folder, manifest)
            write_manifest(folder, manifest)
            if manifest.source.startswith(("http:", "https:")):
                trust.record(layout, manifest.source, manifest.archive_sha256, manifest.archive_size)
            publish(layout, folder, name)
        items.append(BundleItem(name, status, manifest.archive_sha256, manifest.total_size()))
    return items


def _check_entry(layout: Layout, folder: Path, name: str, bundle: Path):
    """Re-hash the entry against its manifest and its archive digest against what we trust."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.name != name:
        raise IntegrityError(f"{bundle}: entry {name} has no valid {MANIFEST_NAME}")
    report = full_verify(folder, name)
    if not report.ok or report.extra:
        detail = report.problems() if not report.ok else f"unexpected files: {report.extra[:5]}"
        raise IntegrityError(f"{bundle}: entry {name} does not match its manifest ({detail}); "
                             "pack it again from a healthy cache")
    expected = _registry_digest(name)
    if expected and expected != manifest.archive_sha256:
        raise IntegrityError(f"{bundle}: entry {name} was built from an archive with sha256 "
                             f"{manifest.archive_sha256}, but the registry expects {expected}")
    known = trust.recorded(layout, manifest.source)
    if known and known["sha256"] != manifest.archive_sha256:
        raise IntegrityError(f"{bundle}: entry {name} comes from an archive with sha256 "
                             f"{manifest.archive_sha256}, but {known['sha256']} was recorded for "
                             f"{manifest.source} on first download")
    return manifest


def _registry_digest(name: str) -> str | None:
    try:
        from zoo.registry import get

        sha = get(name).sha256
    except (ZooError, ImportError):
        return None
    return sha.lower() if sha else None
