"""Which URLs to try for a file: ``ODZOO_MIRROR`` bases first (in order), then the original URL."""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from zoo import settings
from zoo.errors import DownloadError

_SCHEMES = ("http", "https", "file")


def mirror_bases(raw: str | None = None) -> list[str]:
    """Parse ``ODZOO_MIRROR`` (comma-separated ``http(s)://host[:port][/prefix]`` or ``file:///dir``)."""
    raw = settings.mirror_list() if raw is None else raw
    bases = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in _SCHEMES or (parts.scheme != "file" and not parts.netloc):
            raise DownloadError(
                f"ODZOO_MIRROR entry {item!r} is not an http(s)://host[:port][/prefix] "
                "or file:///folder URL")
        bases.append(item.rstrip("/"))
    return bases


def apply_mirror(base: str, url: str) -> str:
    """Replace scheme and host of ``url`` by the mirror ``base`` (keeping the path and query)."""
    target = urlsplit(url)
    mirror = urlsplit(base)
    path = mirror.path.rstrip("/") + "/" + target.path.lstrip("/")
    return urlunsplit((mirror.scheme, mirror.netloc, path, target.query, ""))


def candidates(url: str, *, offline: bool) -> list[str]:
    """URLs to try in order; offline keeps only ``file://`` ones. Duplicates are dropped."""
    out: list[str] = []
    for base in mirror_bases():
        out.append(apply_mirror(base, url))
    out.append(url)
    if offline:
        out = [u for u in out if u.startswith("file:")]
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]


def is_local(url: str) -> bool:
    """True for ``file://`` URLs."""
    return urlsplit(url).scheme == "file"
