"""Air-gapped transfer: ``pack`` whole cache entries into one tar, ``import_bundle`` them elsewhere.

A bundle is an uncompressed tar: ``odzoo-bundle.json`` first, then ``models/<name>/...`` (each
entry with its manifest). Import reads the index from the first tar header before unpacking
anything, extracts with the same member checks as downloads (and no more bytes than the bundle
holds), re-hashes every file against its manifest, refuses links that leave their entry, and
publishes each entry with one rename.

A bundle may add models of its own; it never changes what an official (registry) archive is
trusted to be: an entry named like a registry model, or built from a registry URL, must match the
registry's digest or the digest recorded for that URL. Where neither is known it is installed
only where no healthy entry stands, and its digest is not recorded, unless ``trust=True``.
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

from zoo.errors import (
    IntegrityError,
    NotCachedError,
    UnsafeArchiveError,
    ZooError,
)
from zoo.files import written_beside
from zoo.hub import trust
from zoo.hub.cache import (
    DAMAGED,
    MANIFEST_NAME,
    OK,
    QUARANTINE_NAME,
    QUARANTINED,
    UNVERIFIED,
    Layout,
    Manifest,
    check_name,
    entry_state,
    full_verify,
    read_manifest,
    refresh_mtimes,
    rerecord,
    write_manifest,
)
from zoo.hub.extract import Limits, extract
from zoo.hub.fetch import publish
from zoo.hub.lock import clean_stale_tmp, hold
from zoo.hub.maintenance import entry_name
from zoo.output_path import check_output_path, created_parents

BUNDLE_INDEX = "odzoo-bundle.json"
BUNDLE_FORMAT = 1
MAX_INDEX_BYTES = 1 << 20
_IMPORT_LOCK = "odzoo-import"


@dataclass
class BundleItem:
    """One entry packed or imported."""

    name: str
    status: str  # packed | imported | replaced | skipped | kept
    archive_sha256: str
    size_bytes: int
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# -- pack ---------------------------------------------------------------------------------------
def pack(layout: Layout, names: list[str], out: Path, *, show: bool = False) -> list[BundleItem]:
    """Write the named entries (re-hashed first: only whole entries travel) to the tar ``out``.
    The tar is written beside ``out`` under a temporary name and renamed when complete."""
    out = check_output_path(out, "out", kind="file", outside=(layout.root, "the cache")).absolute()
    folders = list(dict.fromkeys(entry_name(layout, raw) for raw in names))
    items = []
    for name in folders:
        entry = layout.entry(name)
        with hold(layout, name, announce=show):
            report = full_verify(entry, name)
            manifest = entry_state(entry)[1] if report.ok else None
            if manifest is None or entry_state(entry)[0] == QUARANTINED:
                detail = report.problems() if not report.ok else "quarantined"
                raise IntegrityError(f"{name} is damaged in the cache ({detail}); "
                                     f"run `odzoo cache verify {name}` before packing it")
            rerecord(entry, manifest)
        items.append(BundleItem(name, "packed", manifest.archive_sha256, manifest.total_size()))
    index = {"format": BUNDLE_FORMAT, "created": time.time(), "entries": folders,
             "bytes": sum(i.size_bytes for i in items)}
    with (created_parents(out), written_beside(out, suffix=".tmp") as tmp,
          tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar):
        data = json.dumps(index, indent=1).encode()
        info = tarfile.TarInfo(BUNDLE_INDEX)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))
        for name in folders:
            with hold(layout, name, announce=show):
                tar.add(layout.entry(name), arcname=f"models/{name}", filter=_plain)
    return items


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if info.name.endswith("/" + QUARANTINE_NAME):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# -- import -------------------------------------------------------------------------------------
def read_index(bundle: Path) -> list[str]:
    """The entry names of a bundle, read from its first member alone (nothing is unpacked).
    Raises UnsafeArchiveError when the file is not an odzoo bundle."""
    def refuse(why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{bundle} is not an odzoo bundle ({why}); "
                                  "create bundles with `odzoo pack`")

    try:
        with tarfile.open(bundle, mode="r|*") as tar:
            first = tar.next()
            if first is None:
                raise refuse("empty archive")
            if first.name.removeprefix("./") != BUNDLE_INDEX or not first.isreg():
                raise refuse(f"its first member is {first.name!r}, not {BUNDLE_INDEX}")
            if first.size > MAX_INDEX_BYTES:
                raise refuse(f"{BUNDLE_INDEX} is {first.size} bytes")
            raw = tar.extractfile(first).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise refuse(f"not a readable tar archive: {exc}") from None
    try:
        index = json.loads(raw)
        if not isinstance(index, dict) or index.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format {index.get('format') if isinstance(index, dict) else None!r}, "
                             f"expected {BUNDLE_FORMAT}")
        names = [check_name(str(n)) for n in index["entries"]]
    except (ValueError, KeyError, TypeError, ZooError) as exc:
        raise refuse(f"{BUNDLE_INDEX}: {exc}") from None
    if len(set(names)) != len(names):
        raise refuse(f"{BUNDLE_INDEX} lists an entry twice")
    return names


def bundle_limits(bundle: Path) -> Limits:
    """Bounds for unpacking a bundle: an uncompressed tar never unpacks to more bytes than it
    holds (hard links could multiply them); a compressed one gets the default bounds."""
    limits = Limits()
    try:
        with open(bundle, "rb") as fh:
            fh.seek(257)
            plain_tar = fh.read(5) == b"ustar"
        size = os.path.getsize(bundle)
    except OSError:
        return limits
    if plain_tar:
        limits.max_total_bytes = min(limits.max_total_bytes, size)
    return limits


def import_bundle(layout: Layout, bundle: Path, *, force: bool = False, trust: bool = False,
                  show: bool = False) -> list[BundleItem]:
    """Install every entry of a bundle written by :func:`pack`; returns what happened to each.

    ``force``: replace cached entries built from another archive (the bundle's own models).
    ``trust``: take the bundle's word, also for registry models whose digest nothing here knows:
    record their digest and replace cached entries."""
    bundle = Path(bundle).expanduser()
    if not bundle.is_file():
        raise NotCachedError(f"{bundle}: no such bundle file")
    names = read_index(bundle)
    with hold(layout, _IMPORT_LOCK, announce=show):
        clean_stale_tmp(layout, _IMPORT_LOCK)
        work = layout.tmp_for(_IMPORT_LOCK) / uuid.uuid4().hex
        work.parent.mkdir(parents=True, exist_ok=True)
        try:
            extract(bundle, work, limits=bundle_limits(bundle), show=show, label=bundle.name)
            return _install_all(layout, work, bundle, names, force=force, trusted=trust, show=show)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class _Checked:
    """A bundled entry that matches its manifest, and what is known about its archive."""

    name: str
    manifest: Manifest
    official: bool   # a registry model (by name or by URL)
    vouched: bool    # its digest matches the registry's or the one recorded for its URL


def _install_all(layout: Layout, work: Path, bundle: Path, names: list[str], *, force: bool,
                 trusted: bool, show: bool) -> list[BundleItem]:
    present = sorted(p.name for p in (work / "models").iterdir()) if (work / "models").is_dir() else []
    listed = sorted(set(os.listdir(work)) - {BUNDLE_INDEX, "models"})
    if sorted(names) != present or listed:
        raise UnsafeArchiveError(f"{bundle}: its index lists {names} but it holds "
                                 f"{present + listed}")
    checked = [_check_entry(layout, work / "models" / name, name, bundle) for name in names]
    items = []
    for item in checked:
        folder, manifest = work / "models" / item.name, item.manifest
        with hold(layout, item.name, announce=show):
            status, detail = _decide(layout, item, force=force, trusted=trusted)
            if status in ("imported", "replaced"):
                refresh_mtimes(folder, manifest)
                write_manifest(folder, manifest)
                if _pins(manifest, item, trusted):
                    trust.record(layout, manifest.source, manifest.archive_sha256, manifest.archive_size)
                publish(layout, folder, item.name)
        items.append(BundleItem(item.name, status, manifest.archive_sha256, manifest.total_size(), detail))
    return items


def _pins(manifest: Manifest, item: _Checked, trusted: bool) -> bool:
    """Record the bundle's digest for its URL? Never for a registry URL on the bundle's word."""
    return manifest.source.startswith(("http:", "https:")) and (not item.official or trusted)


def _decide(layout: Layout, item: _Checked, *, force: bool, trusted: bool) -> tuple[str, str]:
    """What to do with a bundled entry given the cached one: imported, replaced, skipped or kept."""
    entry = layout.entry(item.name)
    if not os.path.lexists(entry):
        return "imported", ""
    state, current = entry_state(entry)
    if state == UNVERIFIED:
        state = OK if full_verify(entry, item.name).ok else DAMAGED
    digest = item.manifest.archive_sha256
    same = current is not None and current.archive_sha256 == digest
    if state == OK:
        if same and not force:
            return "skipped", "already cached"
        if not same and item.official and not item.vouched and not trusted:
            return "kept", ("the cached entry comes from another archive and nothing here confirms "
                            "the bundle's; `odzoo import --trust` replaces it")
        if not same and not (force or trusted):
            return "kept", "the cached entry comes from another archive; `odzoo import --force` replaces it"
        return "replaced", ""
    # damaged or quarantined: the bundle repairs it, from the same archive unless vouched or trusted
    if item.official and not item.vouched and not trusted and current is not None and not same:
        return "kept", (f"the damaged cached entry was built from archive {current.archive_sha256}, "
                        "not the bundle's; `odzoo import --trust` replaces it")
    return "replaced", ""


def _check_entry(layout: Layout, folder: Path, name: str, bundle: Path) -> _Checked:
    """Re-hash the entry against its manifest, and its archive digest against what we trust for
    the registry model it claims to be (by name or by URL) and for its URL."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.name != name:
        raise IntegrityError(f"{bundle}: entry {name} has no valid {MANIFEST_NAME}")
    report = full_verify(folder, name)
    extra = report.extra + ([QUARANTINE_NAME] if os.path.lexists(folder / QUARANTINE_NAME) else [])
    if not report.ok or extra:
        detail = report.problems() if not report.ok else f"unexpected files: {extra[:5]}"
        raise IntegrityError(f"{bundle}: entry {name} does not match its manifest ({detail}); "
                             "pack it again from a healthy cache")
    by_name = _registry_spec(name)
    specs = [s for s in (by_name if by_name is not None and by_name.name == name else None,
                         _registry_spec_for_url(manifest.source)) if s is not None]
    digest = manifest.archive_sha256
    for spec in specs:
        if spec.sha256 and spec.sha256.lower() != digest:
            raise IntegrityError(f"{bundle}: entry {name} was built from an archive with sha256 "
                                 f"{digest}, but the registry expects {spec.sha256.lower()} for "
                                 f"{spec.name}")
    vouched = any(spec.sha256 for spec in specs)
    for url in dict.fromkeys([manifest.source, *(spec.url for spec in specs)]):
        known = trust.recorded(layout, url)
        if known and known["sha256"] != digest:
            raise IntegrityError(f"{bundle}: entry {name} comes from an archive with sha256 "
                                 f"{digest}, but {known['sha256']} was recorded for {url} on "
                                 "first download")
        vouched = vouched or bool(known)
    return _Checked(name, manifest, bool(specs), vouched)


def _registry_spec(name: str):
    try:
        from zoo.registry import get

        return get(name)
    except (ZooError, ImportError):
        return None


def _registry_spec_for_url(url: str):
    try:
        from zoo.registry import list_models
    except ImportError:
        return None
    try:
        return next((s for s in list_models() if s.url == url), None)
    except ZooError:
        return None
