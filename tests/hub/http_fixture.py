"""A real HTTP server on 127.0.0.1 with switchable faults, for download tests.

    with FaultyServer(root) as srv:          # serves files under ``root`` (real bytes, real socket)
        srv.add_fault("drop", at=1000)       # next request: close the connection after 1000 bytes
        srv.url("/models/x.tar.gz")
        srv.requests                         # what was asked: path, Range header, status, bytes sent

Faults apply to the next matching requests in order (each ``times`` times, optionally only for a
``path``, or only for requests with a Range header when ``ranged``):
  drop      send ``at`` body bytes, then close the connection (Content-Length promised the whole)
  status    answer ``code`` (e.g. 503, 429) with optional ``headers`` (e.g. Retry-After) and no body
  short     send ``at`` body bytes without Content-Length, then close (a silently truncated body)
  corrupt   send the body with the byte at file offset ``at`` flipped (``spread`` bytes, ``chunk``
            apart), headers unchanged (a body damaged on the way)
  stall     send ``at`` bytes, then stall for ``delay`` seconds before closing
  trickle   send the body in ``chunk``-byte pieces with ``delay`` seconds between them
  slow      wait ``delay`` seconds before answering, then answer normally (a slow start)
  norange   answer 200 with the whole file even when a Range was asked
Persistent switches: ``ignore_range`` (always answer 200 with the whole file), ``etag``,
``last_modified``, ``md5`` (None, ``"goog"``: ``x-goog-hash: crc32c=..,md5=..`` of the whole file
on every answer, as Cloud Storage sends; ``"content-md5"``: ``Content-MD5`` on 200 answers).
Requests for absolute URLs (``GET http://host/path``) are served from ``path``, so the server also
works as an HTTP proxy for any host; ``tls=(cert, key)`` serves https.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit


@dataclass
class Request:
    """One request as the server saw it."""

    path: str
    range: str | None
    status: int
    sent: int = 0
    if_range: str | None = None


@dataclass
class Fault:
    kind: str
    at: int = 0
    code: int = 503
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    chunk: int = 1024
    times: int = 1
    path: str | None = None
    ranged: bool = False
    spread: int = 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        owner: FaultyServer = self.server.owner
        path = unquote(urlsplit(self.path).path)
        rng = self.headers.get("Range")
        record = Request(path, rng, 0, if_range=self.headers.get("If-Range"))
        with owner.lock:
            owner.requests.append(record)
        fault = owner._take_fault(path, ranged=bool(rng))
        file = owner.root / path.lstrip("/")
        if ".." in Path(path).parts or not file.is_file():
            self._plain(record, 404)
            return
        if fault and fault.kind == "status":
            self._plain(record, fault.code, fault.headers)
            return
        if fault and fault.kind == "slow":
            time.sleep(fault.delay)
            fault = None
        size = file.stat().st_size
        start, end = 0, size - 1
        status = 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and not owner.ignore_range and not (fault and fault.kind == "norange"):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else size - 1
            if start >= size:
                record.status = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                return
            status = 206
        length = end - start + 1
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        if not (fault and fault.kind == "short"):
            self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        mtime = file.stat().st_mtime
        if owner.last_modified:
            self.send_header("Last-Modified", email.utils.formatdate(mtime, usegmt=True))
        if owner.etag:
            self.send_header("ETag", f'"{size:x}-{int(mtime):x}"')
        if owner.md5 == "goog":
            md5, crc = owner.digests(file)
            self.send_header("x-goog-hash", f"crc32c={crc}")
            self.send_header("x-goog-hash", f"md5={md5}")
        elif owner.md5 == "content-md5" and status == 200:
            self.send_header("Content-MD5", owner.digests(file)[0])
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if head:
            return
        try:
            self._body(record, file, start, length, fault)
        except OSError:  # the client went away (killed, timed out): nothing to report
            pass

    def _body(self, record: Request, file: Path, start: int, length: int, fault: Fault | None) -> None:
        self.wfile.flush()
        sock: socket.socket = self.connection
        with open(file, "rb") as fh:
            if fault is None:
                record.sent = sock.sendfile(fh, start, length) or 0
                return
            fh.seek(start)
            if fault.kind in ("drop", "short", "stall"):
                data = fh.read(min(fault.at, length))
                sock.sendall(data)
                record.sent = len(data)
                if fault.kind == "stall":
                    time.sleep(fault.delay)
                sock.shutdown(socket.SHUT_RDWR)
                return
            if fault.kind == "corrupt":
                data = bytearray(fh.read(length))
                for i in range(fault.spread):
                    pos = fault.at + i * fault.chunk - start
                    if 0 <= pos < len(data):
                        data[pos] ^= 0xFF
                sock.sendall(data)
                record.sent = len(data)
                return
            if fault.kind == "norange":
                record.sent = sock.sendfile(fh, start, length) or 0
                return
            if fault.kind == "trickle":
                remaining = length
                while remaining:
                    data = fh.read(min(fault.chunk, remaining))
                    sock.sendall(data)
                    record.sent += len(data)
                    remaining -= len(data)
                    if remaining:
                        time.sleep(fault.delay)
                return
            raise ValueError(f"unknown fault {fault.kind}")

    def _plain(self, record: Request, code: int, headers: dict | None = None) -> None:
        record.status = code
        body = f"{code}\n".encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(body)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as in ``x-goog-hash``; only for the small files of tests."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def self_signed(folder: Path) -> tuple[str, str]:
    """A certificate and key for https on 127.0.0.1 (written with openssl into ``folder``)."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: FaultyServer


class FaultyServer:
    """Serve ``root`` on 127.0.0.1 (ephemeral port) in a background thread."""

    def __init__(self, root: str | os.PathLike, *, tls: tuple[str, str] | None = None) -> None:
        """``tls``: (certfile, keyfile) to serve https instead of http."""
        self.root = Path(root).resolve()
        self.scheme = "https" if tls else "http"
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.ignore_range = False
        self.etag = True
        self.last_modified = True
        self.md5: str | None = None
        self._digests: dict[tuple[Path, int, int], tuple[str, str]] = {}
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        if tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def url(self, path: str) -> str:
        return self.base + "/" + path.lstrip("/")

    def add_fault(self, kind: str, **kwargs) -> Fault:
        fault = Fault(kind, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        """Forget recorded requests and pending faults; switch persistent faults off."""
        with self.lock:
            self.requests.clear()
            self.faults.clear()
        self.ignore_range = False
        self.etag = True
        self.last_modified = True
        self.md5 = None

    def digests(self, file: Path) -> tuple[str, str]:
        """(md5, crc32c) of a served file, base64 as Cloud Storage sends them."""
        st = file.stat()
        key = (file, st.st_size, st.st_mtime_ns)
        with self.lock:
            if key not in self._digests:
                data = file.read_bytes()
                md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
                crc = base64.b64encode(_crc32c(data).to_bytes(4, "big")).decode()
                self._digests[key] = (md5, crc)
            return self._digests[key]

    def _take_fault(self, path: str, ranged: bool = False) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if (fault.path is None or fault.path == path) and (ranged or not fault.ranged):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def clear_faults(self, path: str) -> None:
        """Drop the pending faults of ``path``."""
        with self.lock:
            self.faults = [f for f in self.faults if f.path != path]

    def count(self, path: str | None = None) -> int:
        """Requests served (for ``path`` if given)."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def bytes_sent(self, path: str | None = None) -> int:
        with self.lock:
            return sum(r.sent for r in self.requests if path is None or r.path == path)

    def start(self) -> FaultyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # serve a folder by hand: python tests/http_fixture.py ROOT
    import sys

    with FaultyServer(sys.argv[1] if len(sys.argv) > 1 else ".") as srv:
        print(srv.base, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
