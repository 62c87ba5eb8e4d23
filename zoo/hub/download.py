"""Fetch one file into ``<cache>/downloads`` with resume, retries and digest verification.

Each candidate URL (mirrors first) is tried in turn. Transient failures (connection errors, read
timeouts, 5xx, 429) are retried with exponential backoff, honouring ``Retry-After``; interrupted
bodies resume with an HTTP Range request from the bytes already on disk (also across processes: the
``.part`` file and its ``.part.json`` sidecar stay until the file verifies). A server that ignores
Range is handled by restarting from byte 0. The sha256 (and size) decide whether bytes are accepted:
a URL serving other bytes is skipped.

What the server says about the content is used too: an md5 in ``x-goog-hash`` (on 200 and 206
answers: it describes the whole object) or ``Content-MD5`` (on 200 answers) must match the whole
file. A mismatch is a damaged transfer: the bytes are discarded and fetched again from byte 0.
A sha256 mismatch without such a header may be damage too, so a URL gets one clean restart before
it is skipped; with a matching md5 the server really serves other bytes and is skipped at once.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import requests
import urllib3

from zoo.hub.config import NetSettings
from zoo.files import file_sha256, prefix_digest, write_json_atomic
from zoo.hub.progress import bar

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_STREAM_ERRORS = (urllib3.exceptions.HTTPError, requests.exceptions.RequestException, OSError)


@dataclass
class Blob:
    """A verified file: ``path`` holds bytes with digest ``sha256``; ``owned`` if it is our .part."""

    path: Path
    sha256: str
    size: int
    url: str
    owned: bool


@dataclass
class Failure:
    """Why one URL was given up."""

    url: str
    reason: str
    wrong_bytes: bool = False


@dataclass
class AllFailed(Exception):
    """Every candidate URL failed."""

    failures: list[Failure] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{f.url}: {f.reason}" for f in self.failures)


class _GiveUp(Exception):
    def __init__(self, reason: str, wrong_bytes: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.wrong_bytes = wrong_bytes


def file_url_path(url: str) -> Path:
    """Local path of a ``file://`` URL."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"{url}: file URLs must name a local path (file:///path)")
    return Path(url2pathname(unquote(parts.path)))


def hash_file(path: Path, show: bool, label: str) -> tuple[str, int]:
    """sha256 and size of a local file, with a progress bar."""
    size = path.stat().st_size
    with bar(show, desc=f"verify {label}", total=size) as pb:
        return file_sha256(path, pb.update), size


def part_paths(downloads: Path, key: str) -> tuple[Path, Path]:
    """The partial file of ``key`` and its JSON sidecar."""
    return downloads / f"{key}.part", downloads / f"{key}.part.json"


class Downloader:
    """Downloads one logical file (``key``) from a list of candidate URLs."""

    def __init__(self, downloads: Path, key: str, *, expected_sha256: str | None,
                 expected_size: int | None, settings: NetSettings, show: bool, label: str,
                 session: requests.Session | None = None):
        self.part, self.meta_path = part_paths(downloads, key)
        downloads.mkdir(parents=True, exist_ok=True)
        self.expected_sha256 = expected_sha256.lower() if expected_sha256 else None
        self.expected_size = expected_size
        self.settings = settings
        self.show = show
        self.label = label
        self.session = session or requests.Session()
        self.failures: list[Failure] = []
        self._hasher = hashlib.sha256()
        self._hashed = 0  # bytes at the start of the .part that ``_hasher`` has seen
        self._md5 = None  # md5 of the same bytes, kept only while the server declares one
        self._want_md5: str | None = None  # what the last answer declared for the whole file

    # -- public -----------------------------------------------------------------------------------
    def run(self, urls: list[str]) -> Blob:
        """Try each URL in order; return the first verified blob or raise AllFailed."""
        for url in urls:
            try:
                if urlsplit(url).scheme == "file":
                    return self._from_file(url)
                return self._from_http(url)
            except _GiveUp as exc:
                self.failures.append(Failure(url, exc.reason, exc.wrong_bytes))
        raise AllFailed(self.failures)

    # -- file:// ----------------------------------------------------------------------------------
    def _from_file(self, url: str) -> Blob:
        try:
            path = file_url_path(url)
        except ValueError as exc:
            raise _GiveUp(str(exc)) from None
        if not path.is_file():
            raise _GiveUp(f"no such file {path}")
        try:
            sha, size = hash_file(path, self.show, self.label)
        except OSError as exc:
            raise _GiveUp(f"cannot read {path}: {exc.strerror or exc}") from None
        self._check(sha, size)
        return Blob(path, sha, size, url, owned=False)

    def _check(self, sha: str, size: int) -> None:
        if self.expected_size is not None and size != self.expected_size:
            raise _GiveUp(f"size {size} bytes, expected {self.expected_size}", wrong_bytes=True)
        if self.expected_sha256 and sha != self.expected_sha256:
            raise _GiveUp(f"sha256 {sha}, expected {self.expected_sha256}", wrong_bytes=True)

    # -- http(s) ----------------------------------------------------------------------------------
    def _load_meta(self) -> dict:
        try:
            with open(self.meta_path, encoding="utf-8") as fh:
                data = json.load(fh)
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _save_meta(self, meta: dict) -> None:
        write_json_atomic(self.meta_path, meta, durable=False)

    def discard(self) -> None:
        """Delete the partial file and its sidecar."""
        self.part.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)
        self._hashed = -1
        self._md5 = None

    def _resumable_offset(self, url: str) -> int:
        """Bytes of the .part that may be kept for ``url``: any URL if the digest is known (it will
        decide), else only the URL that wrote them, and only with a validator to send in If-Range."""
        try:
            size = self.part.stat().st_size
        except FileNotFoundError:
            return 0
        if size == 0:
            return 0
        if self.expected_size is not None and size > self.expected_size:
            self.discard()
            return 0
        if self.expected_sha256:
            return size
        meta = self._load_meta()
        if meta.get("url") == url and (meta.get("etag") or meta.get("last_modified")):
            return size
        self.discard()
        return 0

    def _wait(self, failures: int, retry_after: float | None = None) -> None:
        delay = self.settings.backoff(failures)
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self.settings.retry_after_max)
        time.sleep(delay)

    def _from_http(self, url: str) -> Blob:
        s = self.settings
        failures = 0
        restarted = False
        last_error = ""
        while True:
            if failures >= s.attempts:
                raise _GiveUp(f"gave up after {failures} attempts ({last_error})")
            offset = self._resumable_offset(url)
            if offset != self._hashed:
                self._rehash_prefix(offset)
            self._want_md5 = None
            if offset and self.expected_size is not None and offset == self.expected_size:
                total: int | None = offset
            else:
                try:
                    total = self._request(url, offset)
                except _Retry as exc:
                    failures += 1
                    last_error = exc.reason
                    if failures < s.attempts:
                        self._wait(failures, exc.retry_after)
                    continue
            size = self._part_size()
            if total is None:
                total = self.expected_size
            if total is not None and size < total:
                failures += 1
                last_error = f"body ended at byte {size} of {total}"
                if failures < s.attempts:
                    self._wait(failures)
                continue
            if size != self._hashed:
                self._rehash_prefix(size)
            if self._want_md5 and self._md5 is not None:
                got = self._md5.hexdigest()
                if got != self._want_md5:  # damaged in transfer: start again from byte 0
                    self.discard()
                    failures += 1
                    last_error = (f"damaged body: md5 {got} differs from the server's "
                                  f"{self._want_md5}")
                    if failures < s.attempts:
                        self._wait(failures)
                    continue
                vouched = True
            else:
                vouched = False
            sha = self._hasher.hexdigest()
            try:
                self._check(sha, size)
            except _GiveUp:
                self.discard()
                if not vouched and not restarted:
                    restarted = True  # perhaps damaged on the way: one clean restart
                    continue
                raise
            return Blob(self.part, sha, size, url, owned=True)

    def _part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def _rehash_prefix(self, offset: int) -> None:
        """Make the running digest cover exactly the first ``offset`` bytes of the .part."""
        self._hasher = prefix_digest(self.part, offset) if offset else hashlib.sha256()
        self._hashed = offset
        self._md5 = None

    def _request(self, url: str, offset: int) -> int | None:
        """One GET appending to the .part. Returns the total size when the server tells it."""
        s = self.settings
        headers = {"Accept-Encoding": "identity"}
        meta = self._load_meta() if offset else {}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = meta.get("etag") or meta.get("last_modified")
            if validator and not self.expected_sha256:
                headers["If-Range"] = validator
        try:
            resp = self.session.get(url, headers=headers, stream=True,
                                    timeout=(s.connect_timeout, s.read_timeout))
        except requests.exceptions.SSLError as exc:  # a certificate problem does not go away
            raise _GiveUp(f"TLS error ({_describe(exc)}); set REQUESTS_CA_BUNDLE or SSL_CERT_FILE "
                          "to your CA bundle if a proxy or private CA signs this host") from None
        except requests.exceptions.RequestException as exc:
            raise _Retry(_describe(exc)) from None
        with resp:
            code = resp.status_code
            if code == 416 and offset:
                total = _content_range_total(resp.headers.get("Content-Range"))
                if total is not None and total == offset:
                    return total
                self.discard()
                raise _Retry("HTTP 416 for the partial download; restarting from byte 0")
            if code in _TRANSIENT_STATUS:
                raise _Retry(f"HTTP {code}", retry_after=_retry_after(resp.headers.get("Retry-After")))
            if code not in (200, 206):
                raise _GiveUp(f"HTTP {code} {resp.reason or ''}".strip())
            if code == 206:
                start, total = _content_range(resp.headers.get("Content-Range"))
                if start != offset:
                    self.discard()
                    raise _Retry(f"asked for bytes {offset}- and got a range starting at {start}")
            else:
                if offset:  # Range ignored (or the file changed): start again from byte 0
                    self.discard()
                    offset = 0
                length = resp.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
            if total is not None and self.expected_size is not None and total != self.expected_size:
                raise _GiveUp(f"server reports {total} bytes, expected {self.expected_size}",
                              wrong_bytes=True)
            want_md5 = server_md5(resp.headers, whole=code == 200)
            if want_md5 is None and code == 206 and meta.get("url") == url:
                want_md5 = meta.get("md5")  # declared by the answer whose bytes we resume
            self._save_meta({"url": url, "etag": resp.headers.get("ETag"),
                             "last_modified": resp.headers.get("Last-Modified"), "total": total,
                             "md5": want_md5})
            if offset == 0:
                self._hasher, self._hashed = hashlib.sha256(), 0
                self._md5 = None
            if want_md5 and self._md5 is None:
                self._md5 = prefix_digest(self.part, offset, "md5")
            elif not want_md5:
                self._md5 = None
            self._want_md5 = want_md5
            self._stream(resp, offset, total)
            return total

    def _stream(self, resp: requests.Response, offset: int, total: int | None) -> None:
        """Copy the body to the .part. Reading the next block overlaps with writing and hashing the
        previous one in a helper thread (socket reads, file writes and sha256 all release the GIL);
        at most one block is in flight, so a kill loses at most one block of received data."""
        chunk = self.settings.chunk_size
        raw = resp.raw
        # read1 returns what has arrived instead of waiting for a full chunk (urllib3 >= 2)
        read = raw.read1 if hasattr(raw, "read1") else raw.read
        hasher = self._hasher
        md5 = self._md5

        with open(self.part, "ab" if offset else "wb", buffering=0) as fh, \
                bar(self.show, desc=self.label, total=total, initial=offset) as pb, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="odzoo-write") as pool:

            def absorb(block: bytes) -> None:
                fh.write(block)
                hasher.update(block)
                if md5 is not None:
                    md5.update(block)
                self._hashed += len(block)
                pb.update(len(block))

            pending = None
            while True:
                try:
                    block = read(chunk, decode_content=False)
                except _STREAM_ERRORS as exc:
                    if pending is not None:
                        pending.result()
                    raise _Retry(f"connection lost at byte {self._hashed}: {_describe(exc)}") from None
                if pending is not None:
                    pending.result()
                    pending = None
                if not block:
                    break
                pending = pool.submit(absorb, block)


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def server_md5(headers, *, whole: bool) -> str | None:
    """The md5 (hex) the server declares for the whole file: ``x-goog-hash: md5=<base64>`` (Google
    Cloud Storage, which the zoo host uses; it describes the whole object even on a 206 answer), or
    ``Content-MD5`` when ``whole`` (a 200 answer, where the body is the whole file)."""
    candidates = []
    for part in (headers.get("x-goog-hash") or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "md5":
            candidates.append(value.strip())
    if whole and headers.get("Content-MD5"):
        candidates.append(headers["Content-MD5"].strip())
    for value in candidates:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 16:
            return raw.hex()
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_range(value: str | None) -> tuple[int, int | None]:
    """Parse ``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    try:
        _unit, rest = (value or "").split(" ", 1)
        span, total = rest.split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (int(total) if total.strip() != "*" else None)
    except ValueError:
        return -1, None


def _content_range_total(value: str | None) -> int | None:
    try:
        return int((value or "").rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None
