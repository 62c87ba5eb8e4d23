"""``fetch``: make a model available as a whole, verified cache entry and return its folder.

Order of work for a source that is not cached: take the entry's lock (one download for many
processes), look again (another process may have finished), clean work folders of dead processes,
obtain the archive (kept archive, mirrors, original URL: the sha256 decides), extract it into a
work folder inside the cache while hashing every file and checking the compressed stream to its
end, read every checkpoint tensor back, compare the archive with its registry entry, write the
manifest, record a learned digest, publish with one ``os.rename``. Readers only ever see whole
entries.

A download that turns out damaged (codec error, truncated tar, unreadable checkpoint) while no
digest pins its bytes is discarded and fetched once more from byte 0 in the same call; nothing is
learned from bytes that failed.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zoo.errors import (
    CacheError,
    ConfigError,
    DamagedArchiveError,
    DownloadError,
    IntegrityError,
    NotCachedError,
    OfflineError,
)
from zoo.hub import config, trust
from zoo.hub.archive_check import check_matches_spec, check_tensor_bundles
from zoo.hub.cache import (
    Layout,
    Manifest,
    full_verify,
    quarantine_message,
    quick_check,
    read_manifest,
    refresh_mtimes,
    write_manifest,
)
from zoo.hub.download import AllFailed, Blob, Downloader, file_url_path
from zoo.hub.extract import Limits, extract
from zoo.hub.lock import clean_stale_tmp, hold
from zoo.hub.mirrors import candidates, is_local
from zoo.hub.progress import enabled
from zoo.model_ref import ARCHIVE_SUFFIXES, parse_model_ref



@dataclass(frozen=True)
class Source:
    """What to fetch: entry name, canonical URL and what the bytes must be."""

    name: str
    url: str
    sha256: str | None = None
    size: int | None = None
    archive_top: str | None = None
    arg: str = ""                 # how the user names it on the command line
    local: bool = False           # a file the user gave: no trust-on-first-use record
    registry_digest: bool = False  # sha256 comes from the registry (not learned)
    meta_architecture: str | None = None  # what the archive's pipeline.config must say, if known
    num_classes: int | None = None

    @property
    def label(self) -> str:
        return self.name


def archive_basename(path_or_url: str) -> str:
    """``.../name.tar.gz`` -> ``name``."""
    base = os.path.basename(urlsplit(path_or_url).path if "://" in path_or_url else path_or_url)
    for suffix in ARCHIVE_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def is_model_folder(path: Path) -> bool:
    """A folder with ``pipeline.config``, ``checkpoint/`` or ``saved_model/`` (zoo archives have all
    three; checkpoint-only archives have just ``checkpoint/``)."""
    return ((path / "pipeline.config").is_file() or (path / "checkpoint").is_dir()
            or (path / "saved_model").is_dir())


def source_from_spec(spec: Any) -> Source:
    """A Source from a registry ModelSpec (duck-typed: name, url, sha256, size_bytes, archive_top,
    meta_architecture, num_classes; missing fields are not checked)."""
    sha = getattr(spec, "sha256", None)
    return Source(name=spec.name, url=spec.url, sha256=sha.lower() if sha else None,
                  size=getattr(spec, "size_bytes", None), archive_top=getattr(spec, "archive_top", None),
                  arg=spec.name, registry_digest=bool(sha),
                  meta_architecture=getattr(spec, "meta_architecture", None),
                  num_classes=getattr(spec, "num_classes", None))


def resolve(source: Any) -> Source | Path:
    """Turn what the user passed into a Source, or a Path for a ready model folder."""
    if isinstance(source, Source):
        return source
    if not isinstance(source, (str, os.PathLike)) and not (hasattr(source, "url") and hasattr(source, "name")):
        raise TypeError(f"cannot fetch {source!r}: give a ModelSpec, a name, a URL, an archive or a folder")
    ref = parse_model_ref(source)
    if ref.spec is not None:
        return source_from_spec(ref.spec)
    if ref.url is not None:
        return Source(name=archive_basename(ref.url), url=ref.url, arg=ref.url)
    path = ref.path
    if path.is_dir():
        if not is_model_folder(path):
            raise ConfigError(f"{path} does not look like a model folder: it has no "
                              "pipeline.config, checkpoint/ or saved_model/")
        return path.resolve()
    if path.is_file():
        path = path.resolve()
        return Source(name=archive_basename(path.name), url=path.as_uri(), arg=str(path), local=True)
    raise NotCachedError(f"{ref.text}: no such file or folder")


def fetch(source: Any, *, cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
          progress: bool | None = None, force: bool = False,
          from_file: str | os.PathLike | None = None) -> Path:
    """Path of the extracted model folder for ``source`` (downloaded and verified if needed).

    ``source``: a ModelSpec, a registry name, an http(s)/file URL, a local archive, or a model
    folder (returned as is). ``offline`` defaults to ``ODZOO_OFFLINE``; ``progress`` None = bars on
    a terminal unless ``ODZOO_QUIET=1``; ``force`` re-downloads and replaces the entry;
    ``from_file``: an archive fetched by hand, verified against the source's digest."""
    resolved = resolve(source)
    if isinstance(resolved, Path):
        return resolved
    layout = Layout(Path(cache_dir).expanduser().resolve() if cache_dir else config.cache_dir()).ensure()
    return ensure_entry(layout, resolved, offline=config.offline() if offline is None else offline,
                        show=enabled(progress), force=force,
                        from_file=Path(from_file) if from_file else None)


def cache_dir() -> Path:
    """The cache root (``ODZOO_CACHE`` or the platform cache folder)."""
    return config.cache_dir()


def expected_digest(layout: Layout, src: Source) -> str | None:
    """The sha256 the archive must have: the registry's, else the one recorded on first use over a
    trusted channel (https or a local file)."""
    if src.sha256:
        return src.sha256
    if src.local:
        return None
    rec = trust.recorded(layout, src.url)
    return rec["sha256"] if rec else None


def _origin(src: Source) -> dict:
    if not src.local:
        return {}
    st = file_url_path(src.url).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _matches(manifest: Manifest, src: Source, expected: str | None) -> bool:
    if expected:
        return manifest.archive_sha256 == expected
    if src.local:
        try:
            return manifest.source == src.url and manifest.origin == _origin(src)
        except OSError:
            return manifest.source == src.url
    return manifest.source == src.url


def _touch(entry: Path) -> None:
    try:
        os.utime(entry / ".odzoo-manifest.json")
    except OSError:
        pass  # read-only caches still serve


def ensure_entry(layout: Layout, src: Source, *, offline: bool, show: bool, force: bool = False,
                 from_file: Path | None = None, settings: config.NetSettings | None = None,
                 limits: Limits | None = None) -> Path:
    """Return the entry folder of ``src``, creating or replacing it under its lock.
    ``settings``: network policy (default: from the environment); ``limits``: unpacking bounds."""
    entry = layout.entry(src.name)
    if not force and from_file is None:
        manifest = quick_check(entry)
        if manifest is not None and _matches(manifest, src, expected_digest(layout, src)):
            _touch(entry)
            return entry
    with hold(layout, src.name, announce=show):
        expected = expected_digest(layout, src)
        if not force and from_file is None:
            refused = quarantine_message(src.name, entry)
            if refused:
                raise CacheError(refused)
            ready = _usable_entry(entry, src, expected)
            if ready is not None:
                return ready
        clean_stale_tmp(layout, src.name)
        settings = settings or config.NetSettings.from_env()
        tries = 1 if expected or src.local or from_file is not None else 2
        for attempt in range(1, tries + 1):
            blob = _obtain(layout, src, expected, offline=offline, show=show, from_file=from_file,
                           settings=settings)
            try:
                _install(layout, src, blob, show=show, limits=limits)
            except DamagedArchiveError as exc:
                _dispose(layout, blob, installed=False)  # the next attempt starts from byte 0
                if attempt == tries:
                    raise _damaged_error(src, blob, expected, exc, tries) from None
                continue
            except BaseException:
                _dispose(layout, blob, installed=False)
                raise
            _dispose(layout, blob, installed=True)
            break
    return entry


def _damaged_error(src: Source, blob: Blob, expected: str | None, exc: DamagedArchiveError,
                   tries: int) -> DamagedArchiveError:
    detail = str(exc)
    if is_local(blob.url) and not blob.owned:
        where = file_url_path(blob.url)
        if expected:
            return DamagedArchiveError(
                f"{where} has the expected sha256 of {src.name} but is damaged: {detail}. The "
                "archive itself is broken; get a good copy and check the registry's digest")
        return DamagedArchiveError(f"{where} is damaged: {detail}. Get a whole copy of the archive "
                                   f"of {src.name} and try again")
    if expected:
        return DamagedArchiveError(
            f"the archive of {src.name} from {blob.url} has its expected sha256 {expected} but is "
            f"damaged: {detail}. The published file itself is broken; nothing was cached. Report "
            "it to the publisher, or use a good copy with --from-file")
    dest = f"{src.name}.tar.gz"
    return DamagedArchiveError(
        f"the download of {src.name} from {blob.url} was damaged {tries} times in a row ({detail}); "
        f"nothing was cached and no digest was recorded. Try again later or from another mirror "
        f"(ODZOO_MIRROR), or fetch it by hand: curl -L -o {dest} {src.url} && "
        f"odzoo download {src.arg} --from-file {dest}")


def _usable_entry(entry: Path, src: Source, expected: str | None) -> Path | None:
    """The entry if whole and for this source; a whole entry whose mtimes changed is re-hashed and
    kept when its content is intact."""
    manifest = quick_check(entry)
    if manifest is not None:
        return entry if _matches(manifest, src, expected) else None
    if not entry.is_dir():
        return None
    manifest = read_manifest(entry)
    if manifest is None or not _matches(manifest, src, expected):
        return None
    if full_verify(entry, src.name).ok:
        refresh_mtimes(entry, manifest)
        write_manifest(entry, manifest)
        return entry
    return None


def _obtain(layout: Layout, src: Source, expected: str | None, *, offline: bool, show: bool,
            from_file: Path | None, settings: config.NetSettings) -> Blob:
    """A verified archive for ``src``: a file given by hand, a kept archive, or a download."""
    key = f"{src.name}@{expected or _url_key(src.url)}"  # one writer: the holder of the entry lock
    downloader = Downloader(layout.downloads, key, expected_sha256=expected, expected_size=src.size,
                            settings=settings, show=show, label=src.label)
    if from_file is not None:
        if not from_file.is_file():
            raise NotCachedError(f"{from_file}: no such file")
        try:
            return downloader.run([from_file.resolve().as_uri()])
        except AllFailed as exc:
            raise IntegrityError(f"{from_file} is not the archive of {src.name}: "
                                 f"{exc.failures[0].reason}") from None
    if expected and layout.archive(expected).is_file():
        try:
            return downloader.run([layout.archive(expected).as_uri()])
        except AllFailed:
            layout.archive(expected).unlink(missing_ok=True)
    urls = candidates(src.url, offline=offline)
    if not urls:
        raise OfflineError(_offline_message(layout, src))
    try:
        return downloader.run(urls)
    except AllFailed as exc:
        if offline:
            raise OfflineError(_offline_message(layout, src) + f" (tried: {exc})") from None
        raise _download_error(layout, src, expected, exc) from None


def _url_key(url: str) -> str:
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:32]


def _offline_message(layout: Layout, src: Source) -> str:
    return (f"{src.name} is not in the cache {layout.root} and ODZOO_OFFLINE=1 forbids downloading "
            f"it. On a connected machine run `odzoo download {src.arg}` and "
            f"`odzoo pack {src.name} -o bundle.tar`, then here `odzoo import bundle.tar`; "
            "or set ODZOO_MIRROR=file:///folder holding a copy of the zoo files")


def _download_error(layout: Layout, src: Source, expected: str | None, exc: AllFailed) -> Exception:
    dest = f"{src.name}.tar.gz"
    digest = expected or "unknown (the first download is recorded and later ones must match it)"
    size = f", {src.size} bytes" if src.size else ""
    text = (f"could not download {src.name}: {exc}. Expected sha256: {digest}{size}. "
            f"Destination: {layout.entry(src.name)}. To fetch it by hand: "
            f"curl -L -o {dest} {src.url} && odzoo download {src.arg} --from-file {dest}")
    if exc.failures and all(f.wrong_bytes for f in exc.failures):
        return IntegrityError(text)
    return DownloadError(text)


def _install(layout: Layout, src: Source, blob: Blob, *, show: bool,
             limits: Limits | None = None) -> None:
    """Unpack ``blob``, check it, and publish it as the entry of ``src``. DamagedArchiveError when
    the archive fails its own checks; nothing is published or recorded on any error."""
    work = layout.tmp_for(src.name) / uuid.uuid4().hex
    work.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder = work / "entry"
        result = extract(blob.path, folder, limits=limits, show=show, label=src.label)
        if not is_model_folder(folder):
            raise IntegrityError(f"the archive of {src.name} ({src.url}) holds no model folder "
                                 "(no pipeline.config, checkpoint/ or saved_model/)")
        check_tensor_bundles(folder, src.name)
        check_matches_spec(folder, src.name, result.top, archive_top=src.archive_top,
                           meta_architecture=src.meta_architecture, num_classes=src.num_classes)
        manifest = Manifest(name=src.name, source=src.url, archive_sha256=blob.sha256,
                            archive_size=blob.size, archive_top=result.top, files=result.files,
                            dirs=result.dirs, symlinks=result.symlinks, origin=_origin(src))
        write_manifest(folder, manifest)
        if not src.local and not src.registry_digest:
            trust.record(layout, src.url, blob.sha256, blob.size, trusted=_trusted_channel(blob.url))
        publish(layout, folder, src.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trusted_channel(url: str) -> bool:
    """Bytes from https or a local file may be pinned on first use; plain http may be tampered with."""
    return urlsplit(url).scheme in ("https", "file")


def publish(layout: Layout, folder: Path, name: str) -> None:
    """Make ``folder`` the entry ``name`` with one rename (an old entry is moved aside first).
    Call with the entry's lock held; ``folder`` must be inside the cache."""
    entry = layout.entry(name)
    layout.models.mkdir(parents=True, exist_ok=True)
    old = None
    if entry.exists() or entry.is_symlink():
        old = layout.tmp_for(name) / f"old-{uuid.uuid4().hex}"
        old.parent.mkdir(parents=True, exist_ok=True)
        os.rename(entry, old)
    os.rename(folder, entry)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _dispose(layout: Layout, blob: Blob, *, installed: bool) -> None:
    """Done with our download: keep the archive of an installed entry (ODZOO_KEEP_ARCHIVES=1),
    else delete the .part and its sidecar (a failed archive is never kept)."""
    if not blob.owned:
        return
    meta = blob.path.with_name(blob.path.name + ".json")
    if installed and config.keep_archives():
        layout.archives.mkdir(parents=True, exist_ok=True)
        os.replace(blob.path, layout.archive(blob.sha256))
    else:
        blob.path.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)
