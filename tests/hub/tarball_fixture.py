"""Zoo-layout and hostile tarballs for hub tests.

``zoo_mirror(base)`` builds (once per test session, cached on disk under ``base``) small stand-in
zoo tarballs with the shared ``make_zoo_tarball.build`` tool from a trimmed manifest, each placed
at its real URL path so that ``ODZOO_MIRROR=http://127.0.0.1:PORT`` reaches it.
``hostile(kind, path)`` writes a malicious archive of one kind.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock

from tests.conftest import CONFIGS, MANIFESTS, TOOLS

ZOO = "http://download.tensorflow.org/models/object_detection/tf2"
SSD = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
CENTERNET = "centernet_mobilenetv2fpn_512x512_coco17_od"


@dataclass(frozen=True)
class ZooFile:
    """A stand-in archive: its registry-like facts and where it lies under the mirror root."""

    name: str
    url: str
    archive_top: str
    path: Path          # file under the mirror root
    sha256: str
    size: int

    @property
    def url_path(self) -> str:
        return urlsplit(self.url).path


@dataclass(frozen=True)
class Spec:
    """A minimal frozen stand-in for zoo.registry.ModelSpec (the fields the hub reads)."""

    name: str
    url: str
    sha256: str | None = None
    size_bytes: int | None = None
    archive_top: str | None = None
    meta_architecture: str | None = None
    num_classes: int | None = None


def spec_of(z: ZooFile, *, with_digest: bool = True) -> Spec:
    return Spec(z.name, z.url, z.sha256 if with_digest else None, z.size if with_digest else None,
                z.archive_top)


def _trimmed(manifest: dict, keep: int = 30, big: int = 1) -> dict:
    """The first ``keep`` variables plus the ``big`` largest ones (real keys, shapes and dtypes)."""
    variables = manifest["variables"]
    size = lambda v: int(__import__("numpy").prod(v[1]))
    largest = sorted(variables, key=size, reverse=True)[:big]
    chosen = variables[:keep] + [v for v in largest if v not in variables[:keep]]
    return {"variables": chosen}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _zoo_tarball_builder():
    """``make_zoo_tarball.build`` from ../shared/tools."""
    sys.path.insert(0, str(TOOLS))
    try:
        from make_zoo_tarball import build
    finally:
        sys.path.remove(str(TOOLS))
    return build


def _archive_record(base: Path, name: str, url: str, top: str, manifest: dict) -> dict:
    """Build one stand-in archive under ``base/root`` at the URL's path; its ZooFile fields."""
    dest, sha = _zoo_tarball_builder()(manifest, str(CONFIGS / name / "pipeline.config"),
                                       str(base / "root"), url=url, top=top)
    return {"name": name, "url": url, "archive_top": top, "path": dest, "sha256": sha,
            "size": os.path.getsize(dest)}


def _built_once(base: Path, index_name: str, build_records) -> dict:
    """The JSON index ``base/index_name``, written by ``build_records()`` under a file lock the
    first time (parallel test processes share one build)."""
    base.mkdir(parents=True, exist_ok=True)
    index = base / index_name
    with FileLock(str(base / ".build.lock")):
        if not index.exists():
            tmp = index.with_suffix(".tmp")
            tmp.write_text(json.dumps(build_records()))
            os.replace(tmp, index)
    return json.loads(index.read_text())


def _zoo_file(v: dict) -> ZooFile:
    return ZooFile(v["name"], v["url"], v["archive_top"], Path(v["path"]), v["sha256"], v["size"])


def zoo_mirror(base: Path) -> dict[str, ZooFile]:
    """Build (or reuse) the stand-in zoo under ``base/root``; returns {name: ZooFile}."""
    plan = [
        (SSD, f"{ZOO}/20200711/{SSD}.tar.gz", SSD, 30, 1),
        # the real archive's top folder differs from the model name
        (CENTERNET, f"{ZOO}/20210210/{CENTERNET}.tar.gz", "centernet_mobilenetv2_fpn_od", 10, 0),
    ]

    def build_all() -> dict:
        return {name: _archive_record(base, name, url, top,
                                      _trimmed(json.loads((MANIFESTS / f"{name}.json").read_text()), keep, big))
                for name, url, top, keep, big in plan}

    return {k: _zoo_file(v) for k, v in _built_once(base, "index.json", build_all).items()}


def small_zoo_archive(base: Path, name: str = SSD, elements: int = 40_000) -> ZooFile:
    """A small stand-in archive (the smallest checkpoint variables of ``name`` up to about
    ``elements`` values, its real pipeline.config, zoo layout), built once under ``base`` and
    reused; for tests that download many times."""

    def build_small() -> dict:
        manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
        chosen, total = [], 0
        for v in sorted(manifest["variables"], key=lambda v: math.prod(v[1])):
            if total >= elements:
                break
            chosen.append(v)
            total += math.prod(v[1])
        return _archive_record(base, name, f"{ZOO}/small/{name}.tar.gz", name, {"variables": chosen})

    return _zoo_file(_built_once(base, "small.json", build_small))


# -- hostile archives ---------------------------------------------------------------------------
HOSTILE_KINDS = ("absolute", "dotdot", "symlink_escape", "symlink_absolute", "hardlink_escape",
                 "device", "fifo", "too_many", "too_large", "outside_top", "duplicate",
                 "symlink_then_write", "symlink_chain")


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def hostile(kind: str, path: Path) -> Path:
    """Write a .tar.gz of the given hostile ``kind`` (one of HOSTILE_KINDS) to ``path``."""
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        _add(tar, "model", type=tarfile.DIRTYPE, mode=0o755)
        _add(tar, "model/pipeline.config", b"model {}\n")
        if kind == "absolute":
            _add(tar, "/tmp/odzoo-evil.txt", b"pwned")
        elif kind == "dotdot":
            _add(tar, "model/../../odzoo-evil.txt", b"pwned")
        elif kind == "symlink_escape":
            _add(tar, "model/link", type=tarfile.SYMTYPE, linkname="../../outside")
        elif kind == "symlink_absolute":
            _add(tar, "model/link", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        elif kind == "hardlink_escape":
            _add(tar, "model/hard", type=tarfile.LNKTYPE, linkname="/etc/passwd")
        elif kind == "device":
            _add(tar, "model/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        elif kind == "fifo":
            _add(tar, "model/fifo", type=tarfile.FIFOTYPE)
        elif kind == "too_many":
            for i in range(60):
                _add(tar, f"model/f{i}", b"")
        elif kind == "too_large":
            info = tarfile.TarInfo("model/huge.bin")
            info.size = 80 << 30  # header only: the check must fire before any data is read
            tar.addfile(info)
        elif kind == "outside_top":
            _add(tar, "other/file", b"x")
        elif kind == "duplicate":
            _add(tar, "model/pipeline.config", b"again")
        elif kind == "symlink_then_write":
            _add(tar, "model/d", type=tarfile.SYMTYPE, linkname=".")
            _add(tar, "model/d/pipeline2.config", b"x")
            _add(tar, "model/d", type=tarfile.SYMTYPE, linkname="/tmp")
        elif kind == "symlink_chain":  # each target looks inside, together they leave the folder
            _add(tar, "model/a", type=tarfile.DIRTYPE, mode=0o755)
            _add(tar, "model/a/up", type=tarfile.SYMTYPE, linkname="..")
            _add(tar, "model/x", type=tarfile.SYMTYPE, linkname="a/up/..")
        else:
            raise ValueError(kind)
    return path


# -- cache invariants ---------------------------------------------------------------------------
def assert_cache_whole(cache: Path) -> list[str]:
    """Every visible entry under ``cache/models`` matches its manifest exactly (re-hashed, nothing
    missing or extra); nothing else is visible there. Returns the entry names."""
    from zoo.hub.cache import full_verify

    models = Path(cache) / "models"
    names = []
    if not models.is_dir():
        return names
    for item in sorted(models.iterdir()):
        assert item.is_dir() and not item.name.startswith("."), f"stray item in models/: {item}"
        report = full_verify(item)
        assert report.ok and not report.extra, f"entry {item.name} is not whole: {report}"
        names.append(item.name)
    return names
