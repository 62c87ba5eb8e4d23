"""Damaged, oversized and mismatched archives never become cache entries, and never pin a digest."""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from http_fixture import FaultyServer, self_signed
from tarball_fixture import SSD, Spec, assert_cache_whole

from tests.conftest import FIXTURES
from zoo.errors import (
    CacheError,
    DamagedArchiveError,
    IntegrityError,
    UnsafeArchiveError,
)
from zoo.hub import fetch, read_manifest
from zoo.hub.extract import Limits, extract

SHARED_SSD = FIXTURES / "tarballs" / f"{SSD}.tar.gz"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("ODZOO_RETRIES", "4")


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


def _damage(data: bytes, positions) -> bytes:
    out = bytearray(data)
    for pos in positions:
        out[pos] ^= 0xFF
    return bytes(out)


def _evenly_after(size: int, fraction: float, count: int) -> list[int]:
    start = int(size * fraction)
    return [start + i * (size - start) // count for i in range(count)]


def _site(tmp_path: Path, rel: str, data: bytes) -> Path:
    site = tmp_path / "site"
    (site / rel).parent.mkdir(parents=True, exist_ok=True)
    (site / rel).write_bytes(data)
    return site


# -- the compressed stream is checked to its end ---------------------------------------------------
def test_shared_archive_damaged_after_40_percent_is_refused(tmp_path, isolated_env):
    data = SHARED_SSD.read_bytes()
    bad = tmp_path / f"{SSD}.tar.gz"
    bad.write_bytes(_damage(data, _evenly_after(len(data), 0.4, 7)))
    with pytest.raises(DamagedArchiveError) as info:
        extract(bad, tmp_path / "out")
    assert isinstance(info.value, IntegrityError) and not isinstance(info.value, UnsafeArchiveError)
    assert not (tmp_path / "out").exists()
    with pytest.raises(IntegrityError, match="damaged"):
        fetch(bad)  # a local archive: refused, nothing cached
    assert assert_cache_whole(isolated_env) == []


def _small_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("m")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, payload in members.items():
            info = tarfile.TarInfo(f"m/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


PAYLOAD = {"pipeline.config": b"model { ssd { num_classes: 90 } }\n",
           "checkpoint/blob.bin": os.urandom(150_000)}
CODECS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ)}


def _last_tar_byte_in(plain: bytes) -> int:
    return len(plain.rstrip(b"\0"))


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("damage", ["flip_middle", "flip_trailer", "cut_end"])
def test_codec_damage_anywhere_is_refused(tmp_path, codec, damage):
    packed = CODECS[codec](_small_tar(PAYLOAD))
    if damage == "flip_middle":
        packed = _damage(packed, [len(packed) // 2])
    elif damage == "flip_trailer":  # gzip: CRC32/ISIZE; bz2: stream CRC; xz: index and footer
        packed = _damage(packed, [len(packed) - 6])
    else:
        packed = packed[:-9]
    archive = tmp_path / f"a.tar.{codec}"
    archive.write_bytes(packed)
    with pytest.raises(DamagedArchiveError):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_gzip_crc_and_length_are_checked_even_though_the_tar_is_whole(tmp_path):
    plain = _small_tar(PAYLOAD)
    packed = gzip.compress(plain)
    for offset in (8, 3):  # CRC32 (8..5 bytes from the end), ISIZE (4..1)
        archive = tmp_path / f"trailer{offset}.tar.gz"
        archive.write_bytes(_damage(packed, [len(packed) - offset]))
        with tarfile.open(archive, "r|*") as tar:  # streaming tar reading alone accepts it
            assert len([m for m in tar]) == 3
        with pytest.raises(DamagedArchiveError, match="gzip"):
            extract(archive, tmp_path / f"out{offset}")


def test_tar_without_its_end_or_with_junk_after_it_is_refused(tmp_path):
    plain = _small_tar(PAYLOAD)
    end = _last_tar_byte_in(plain)  # the tar without its two zero blocks and padding
    cases = {"cut.tar": plain[:end], "junk.tar": plain + b"junk", "junk.tar.gz": gzip.compress(plain) + b"junk"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DamagedArchiveError):
            extract(tmp_path / name, tmp_path / f"out-{name}")
        assert not (tmp_path / f"out-{name}").exists()


def test_what_gzip_itself_accepts_is_accepted(tmp_path):
    plain = _small_tar(PAYLOAD)
    split = 1536  # two members that concatenate to the archive, then zero padding
    (tmp_path / "two.tar.gz").write_bytes(gzip.compress(plain[:split]) + gzip.compress(plain[split:])
                                          + b"\0" * 100)
    result = extract(tmp_path / "two.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "checkpoint" / "blob.bin").read_bytes() == PAYLOAD["checkpoint/blob.bin"]
    assert result.top == "m"


# -- a damaged download is fetched again from byte 0, and nothing is learned from it -------------------
def test_faults_then_damaged_range_body_do_not_poison_the_cache(ssd, tmp_path, isolated_env,
                                                                  tls_pair, monkeypatch):
    """A cut connection, a 503, then a damaged body on the resumed Range request: the call still
    succeeds with the true bytes, and the digest pinned over https is the true one."""
    site = _site(tmp_path, ssd.url_path.lstrip("/"), ssd.path.read_bytes())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_pair[0])
    with FaultyServer(site, tls=tls_pair) as srv:
        srv.add_fault("drop", at=100_000)
        srv.add_fault("status", code=503)
        srv.add_fault("corrupt", at=ssd.size - 5_000, ranged=True, spread=7, chunk=500)
        spec = Spec(SSD, srv.url(ssd.url_path), archive_top=ssd.archive_top)
        path = fetch(spec)
        assert read_manifest(path).archive_sha256 == ssd.sha256
        digests = json.loads((isolated_env / "digests.json").read_text())
        assert digests[spec.url]["sha256"] == ssd.sha256 and digests[spec.url]["trusted"] is True
        assert [r.range for r in srv.requests][:3] == [None, "bytes=100000-", "bytes=100000-"]
        assert srv.requests[-1].range is None  # the damaged bytes were discarded, not resumed
        fetch(spec, force=True)  # a healthy download later is accepted
    assert assert_cache_whole(isolated_env) == [SSD]


def test_kept_archives_hold_only_archives_that_installed(ssd, tmp_path, isolated_env, monkeypatch):
    """With ODZOO_KEEP_ARCHIVES=1 a damaged first download is discarded, the second is installed and
    kept; a download that never installs leaves no archive behind."""
    monkeypatch.setenv("ODZOO_KEEP_ARCHIVES", "1")
    site = _site(tmp_path, ssd.url_path.lstrip("/"), ssd.path.read_bytes())
    broken = _repack(ssd.path, tmp_path / "site" / "broken.tar.gz", _flip_checkpoint_byte)
    with FaultyServer(site) as srv:
        srv.add_fault("corrupt", at=ssd.size // 2, spread=7, chunk=500)
        path = fetch(Spec(SSD, srv.url(ssd.url_path), archive_top=ssd.archive_top))
        assert read_manifest(path).archive_sha256 == ssd.sha256 and srv.count() == 2
        with pytest.raises(IntegrityError, match="damaged 2 times"):
            fetch(Spec("other", srv.url("/" + broken.name)))
    kept = sorted(p.name for p in (isolated_env / "archives").iterdir())
    assert kept == [f"{ssd.sha256}.tar.gz"]
    assert not list((isolated_env / "downloads").glob("*.part"))


@pytest.mark.parametrize("md5", ["goog", "content-md5"])
def test_server_md5_catches_a_damaged_body_before_extraction(ssd, tmp_path, isolated_env, md5):
    site = _site(tmp_path, ssd.url_path.lstrip("/"), ssd.path.read_bytes())
    with FaultyServer(site) as srv:
        srv.md5 = md5
        srv.etag = srv.last_modified = False
        srv.add_fault("corrupt", at=ssd.size // 3)
        path = fetch(Spec(SSD, srv.url(ssd.url_path)))
        assert [r.range for r in srv.requests] == [None, None]
    assert read_manifest(path).archive_sha256 == ssd.sha256
    assert assert_cache_whole(isolated_env) == [SSD]


def test_goog_md5_covers_a_resumed_body(ssd, tmp_path, isolated_env):
    site = _site(tmp_path, ssd.url_path.lstrip("/"), ssd.path.read_bytes())
    with FaultyServer(site) as srv:
        srv.md5 = "goog"
        srv.add_fault("drop", at=50_000)
        srv.add_fault("corrupt", at=200_000, ranged=True)
        fetch(Spec(SSD, srv.url(ssd.url_path), ssd.sha256, ssd.size))
        # the sha256 alone would also refuse it; the md5 says it is damage, so no URL is skipped
        assert [(r.range, r.status) for r in srv.requests] == [
            (None, 200), ("bytes=50000-", 206), (None, 200)]
    assert assert_cache_whole(isolated_env) == [SSD]


def test_server_without_validators_or_hashes_still_works(ssd, tmp_path, isolated_env):
    site = _site(tmp_path, ssd.url_path.lstrip("/"), ssd.path.read_bytes())
    with FaultyServer(site) as srv:
        srv.etag = srv.last_modified = False
        srv.add_fault("drop", at=100_000)
        fetch(Spec(SSD, srv.url(ssd.url_path)))
        assert [r.range for r in srv.requests] == [None, None]  # nothing to resume safely against
    assert assert_cache_whole(isolated_env) == [SSD]


def _repack(src: Path, dst: Path, mutate) -> Path:
    work = dst.parent / (dst.name + ".d")
    with tarfile.open(src) as tar:
        tar.extractall(work, filter="data")
    (top,) = list(work.iterdir())
    mutate(top)
    with tarfile.open(dst, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    shutil.rmtree(work)
    return dst


def _flip_checkpoint_byte(top: Path) -> None:
    data = top / "checkpoint" / "ckpt-0.data-00000-of-00001"
    data.write_bytes(_damage(data.read_bytes(), [data.stat().st_size // 2]))


def test_checkpoint_that_cannot_be_read_whole_is_not_whole(ssd, tmp_path, isolated_env):
    broken = _repack(ssd.path, tmp_path / "site" / "broken.tar.gz", _flip_checkpoint_byte)
    with pytest.raises(DamagedArchiveError, match="checkpoint/ckpt-0 cannot be read whole") as info:
        fetch(broken)
    assert "Checksum" in str(info.value) or "crc" in str(info.value).lower()
    with FaultyServer(tmp_path / "site") as srv:
        with pytest.raises(IntegrityError, match="damaged 2 times"):
            fetch(Spec(SSD, srv.url("/broken.tar.gz")))
        assert srv.count() == 2  # fetched once more from byte 0, then given up
        digest = __import__("hashlib").sha256(broken.read_bytes()).hexdigest()
        with pytest.raises(IntegrityError, match="published file itself is broken"):
            fetch(Spec(SSD, srv.url("/broken.tar.gz"), digest))
        assert srv.count() == 3  # the bytes match their digest: fetching again cannot help
    assert assert_cache_whole(isolated_env) == []
    assert not (isolated_env / "digests.json").exists()
    assert not any((isolated_env / "tmp").rglob("*.index"))


# -- expansion is bounded ------------------------------------------------------------------------
class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("model/pipeline.config")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"x {"))
        info = tarfile.TarInfo("model/checkpoint/ckpt-0.data-00000-of-00001")
        info.size = 256 << 20
        tar.addfile(info, _Zeros(info.size))
    assert path.stat().st_size < 2 << 20
    return path


def test_gzip_bomb_is_refused_by_ratio_before_its_data_is_written(bomb, tmp_path):
    with pytest.raises(UnsafeArchiveError, match="max_ratio") as info:
        extract(bomb, tmp_path / "out")
    assert str(bomb) in str(info.value)
    assert not (tmp_path / "out").exists()
    result = extract(bomb, tmp_path / "allowed", limits=Limits(max_ratio=1e6))  # the limit is a setting
    assert sum(f.size for f in result.files) == (256 << 20) + 3


def test_gzip_bomb_download_leaves_nothing(bomb, tmp_path, isolated_env):
    site = _site(tmp_path, "bomb.tar.gz", bomb.read_bytes())
    with FaultyServer(site) as srv, pytest.raises(UnsafeArchiveError):
        fetch(Spec("bomb", srv.url("/bomb.tar.gz")))
    assert assert_cache_whole(isolated_env) == []
    assert not (isolated_env / "digests.json").exists()
    assert not any(p.is_file() for p in (isolated_env / "tmp").rglob("*"))


def test_real_archives_respect_the_default_ratio(ssd):
    for archive in (SHARED_SSD, ssd.path):
        plain = sum(m.size for m in tarfile.open(archive) if m.isreg())
        assert plain < Limits().max_ratio * archive.stat().st_size / 5  # ample headroom


def test_ratio_and_free_space_limits(ssd, tmp_path):
    with pytest.raises(UnsafeArchiveError, match="max_ratio"):
        extract(ssd.path, tmp_path / "a", limits=Limits(max_ratio=1.0, ratio_floor_bytes=0))
    disk = shutil.disk_usage(tmp_path)
    with pytest.raises(CacheError, match="not enough free space") as info:
        extract(ssd.path, tmp_path / "b", limits=Limits(keep_free_bytes=disk.total))
    assert str(ssd.path) in str(info.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# -- the archive must be the model its entry describes ----------------------------------------------
@pytest.mark.parametrize("field,value,found", [
    ("meta_architecture", "center_net", "ssd"),
    ("num_classes", 7, 90),
    ("archive_top", "centernet_mobilenetv2_fpn_od", SSD),
])
def test_archive_contradicting_its_entry_is_refused(ssd, tmp_path, isolated_env, field, value, found):
    site = _site(tmp_path, "a/x.tar.gz", ssd.path.read_bytes())
    with FaultyServer(site) as srv:
        base = {"archive_top": ssd.archive_top, "meta_architecture": "ssd", "num_classes": 90}
        spec = Spec("private_model", srv.url("/a/x.tar.gz"), **{**base, field: value})
        with pytest.raises(IntegrityError) as info:
            fetch(spec)
        assert not isinstance(info.value, DamagedArchiveError)
        assert srv.count() == 1  # not a damaged download: no second fetch
        fetch(Spec("private_model", srv.url("/a/x.tar.gz"), **base))  # the right entry works
    text = str(info.value)
    for needle in ("private_model", field, repr(value), repr(found)):
        assert needle in text
    assert assert_cache_whole(isolated_env) == ["private_model"]
    digests = json.loads((isolated_env / "digests.json").read_text())
    assert list(digests) == [spec.url]  # recorded by the accepted download only


def test_registry_entry_meta_architecture_is_checked(ssd, tmp_path, monkeypatch, isolated_env):
    from zoo import registry

    spec = registry.get(SSD)
    other = registry.get("centernet_mobilenetv2fpn_512x512_coco17_od")
    site = _site(tmp_path, other.url.split("://", 1)[1].split("/", 1)[1], ssd.path.read_bytes())
    with FaultyServer(site) as srv:
        monkeypatch.setenv("ODZOO_MIRROR", srv.base)
        with pytest.raises(IntegrityError, match="archive_top|meta_architecture"):
            fetch(other)  # the SSD archive where the CenterNet one should be
        assert spec.meta_architecture == "ssd"
    assert assert_cache_whole(isolated_env) == []


# -- entries never hold links that leave them --------------------------------------------------------
@pytest.mark.parametrize("target", ["../..", "..", "ROOT"])
def test_link_to_the_cache_root_is_refused(tmp_path, isolated_env, target):
    target = str(isolated_env) if target == "ROOT" else target
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("model/pipeline.config")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
        info = tarfile.TarInfo("model/cache")
        info.type, info.linkname = tarfile.SYMTYPE, target
        tar.addfile(info)
    site = _site(tmp_path, "link.tar.gz", buf.getvalue())
    with FaultyServer(site) as srv, pytest.raises(UnsafeArchiveError, match="symlink"):
        fetch(Spec("link", srv.url("/link.tar.gz")))
    assert assert_cache_whole(isolated_env) == []
    assert not (isolated_env / "digests.json").exists()
