"""The cache contract: cheap load check, verify and repair, prune, rm, pack/import."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time

import pytest
from tarball_fixture import SSD, Spec, assert_cache_whole, hostile

from zoo.errors import CacheError, IntegrityError, UnsafeArchiveError
from zoo.hub import (
    fetch,
    import_bundle,
    layout_for,
    list_entries,
    pack,
    prune,
    quick_check,
    read_manifest,
    remove,
    verify,
)
from zoo.hub.lock import hold


@pytest.fixture
def spec(server, zoo):
    z = zoo[SSD]
    return Spec(z.name, server.url(z.url_path), z.sha256, z.size, z.archive_top)


@pytest.fixture
def cached(spec, server):
    path = fetch(spec)
    server.reset()
    return path


def _flip_byte_keep_stat(path):
    """Corrupt one byte without changing size or mtime (bit rot the cheap check cannot see)."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(st.st_size // 2)
        b = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cached_load_check_reads_no_file_content(cached, spec, server, monkeypatch):
    """A load of a whole entry compares sizes and times only (its cost is in benchmarks/bench_hub.py)."""
    def no_hashing(*args, **kwargs):
        raise AssertionError("a cached load hashed a file")

    monkeypatch.setattr("zoo.hub.cache.file_sha256", no_hashing)
    monkeypatch.setattr("zoo.hub.download.file_sha256", no_hashing)
    for _ in range(3):
        assert fetch(spec) == cached
        assert quick_check(cached) is not None
    assert server.count() == 0  # and asks the network nothing


def test_quick_check_sees_size_and_mtime_changes(cached):
    ckpt = cached / "checkpoint" / "checkpoint"
    assert quick_check(cached) is not None
    os.utime(ckpt, (1, 1))
    assert quick_check(cached) is None
    (cached / ".odzoo-manifest.json").unlink()
    assert quick_check(cached) is None


def test_touched_file_is_rehashed_and_kept(cached, spec, server):
    os.utime(cached / "pipeline.config", (1, 1))
    assert fetch(spec) == cached
    assert server.count() == 0 and quick_check(cached) is not None


def test_truncated_file_is_repaired_on_load(cached, spec, server, isolated_env):
    data = cached / "checkpoint" / "ckpt-0.index"
    data.write_bytes(data.read_bytes()[:10])
    assert fetch(spec) == cached
    assert server.count() == 1
    assert_cache_whole(isolated_env)


def test_verify_detects_bit_rot_and_repairs_by_download(cached, server, isolated_env):
    _flip_byte_keep_stat(cached / "checkpoint" / "ckpt-0.data-00000-of-00001")
    assert quick_check(cached) is not None  # invisible to the cheap check
    layout = layout_for()
    (report,) = verify(layout, repair=False)
    assert report.status == "damaged" and "ckpt-0.data" in report.detail
    (result,) = verify(layout)
    assert result.status == "repaired"
    assert server.count() == 1
    assert assert_cache_whole(isolated_env) == [SSD]


def test_verify_repairs_from_kept_archive_offline(spec, server, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_KEEP_ARCHIVES", "1")
    path = fetch(spec)
    assert (isolated_env / "archives" / f"{spec.sha256}.tar.gz").is_file()
    _flip_byte_keep_stat(path / "pipeline.config")
    server.reset()
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    (result,) = verify(layout_for(), [SSD])
    assert result.status == "repaired" and server.count() == 0
    assert_cache_whole(isolated_env)


def test_verify_quarantines_what_cannot_be_repaired(cached, monkeypatch, isolated_env):
    _flip_byte_keep_stat(cached / "pipeline.config")
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    (result,) = verify(layout_for())
    assert result.status == "quarantined" and "ODZOO_OFFLINE" in result.detail
    assert cached.is_dir() and read_manifest(cached) is not None  # kept, not deleted
    (info,) = list_entries(layout_for())
    assert info.status == "quarantined" and "odzoo cache rm" in info.detail
    with pytest.raises(CacheError, match="quarantined.*odzoo download .* --force"):
        fetch(Spec(SSD, "http://download.tensorflow.org/x/" + SSD + ".tar.gz"))


def test_prune_partials_temps_damaged_and_unused(cached, isolated_env, zoo):
    layout = layout_for()
    (isolated_env / "downloads" / "abc.part").write_bytes(b"x" * 100)
    stale = isolated_env / "tmp" / SSD / "deadbeef"
    stale.mkdir(parents=True)
    (stale / "f").write_bytes(b"y")
    other = fetch(zoo["centernet_mobilenetv2fpn_512x512_coco17_od"].path)
    (other / "pipeline.config").unlink()  # damaged entry, no kept archive: stays unless asked
    items = prune(layout, dry_run=True)
    assert {i.kind for i in items} == {"partial", "temp"}
    assert (isolated_env / "downloads" / "abc.part").exists() and other.exists()
    removed = prune(layout)
    assert {i.kind for i in removed} == {"partial", "temp"}
    assert not stale.exists() and other.exists() and cached.exists()
    assert [i.kind for i in prune(layout, damaged=True)] == ["damaged"]
    assert not other.exists() and cached.exists()
    assert prune(layout, older_than_days=1) == []
    old = time.time() - 3 * 86400
    os.utime(cached / ".odzoo-manifest.json", (old, old))
    assert [i.kind for i in prune(layout, older_than_days=1)] == ["unused"]
    assert assert_cache_whole(isolated_env) == []


def test_prune_leaves_work_of_a_live_process(isolated_env):
    layout = layout_for()
    work = isolated_env / "tmp" / "busy" / "x"
    work.mkdir(parents=True)
    with hold(layout, "busy"):
        assert prune(layout) == []
        assert work.exists()
    assert [i.kind for i in prune(layout)] == ["temp"]


def test_list_and_rm_with_forgotten_digest(server, zoo, isolated_env):
    z = zoo[SSD]
    spec = Spec(z.name, server.url(z.url_path))  # trust on first use
    fetch(spec)
    layout = layout_for()
    (info,) = list_entries(layout)
    assert info.name == SSD and info.status == "ok" and info.archive_sha256 == z.sha256
    assert remove(layout, SSD, forget_digest=True)
    assert list_entries(layout) == []
    assert spec.url not in json.loads((isolated_env / "digests.json").read_text())


def test_pack_import_round_trip(cached, spec, server, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle.tar"
    (item,) = pack(layout_for(), [SSD], bundle)
    assert item.name == SSD and bundle.is_file()
    other_cache = tmp_path / "air-gapped"
    monkeypatch.setenv("ODZOO_CACHE", str(other_cache))
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    (imported,) = import_bundle(layout_for(), bundle)
    assert imported.status == "imported"
    path = fetch(spec)
    assert path == other_cache / "models" / SSD and server.count() == 0
    for rec in read_manifest(path).files:
        assert (path / rec.path).read_bytes() == (cached / rec.path).read_bytes()
    assert assert_cache_whole(other_cache) == [SSD]
    (again,) = import_bundle(layout_for(), bundle)
    assert again.status == "skipped"


def _rewrite_bundle(src, dst, mutate):
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin:
            data = tin.extractfile(member).read() if member.isreg() else None
            member, data = mutate(member, data)
            tout.addfile(member, io.BytesIO(data) if data is not None else None)


def test_tampered_bundle_is_refused(cached, tmp_path, monkeypatch):
    bundle = tmp_path / "bundle.tar"
    pack(layout_for(), [SSD], bundle)

    def flip(member, data):
        if member.name.endswith("pipeline.config"):
            data = data.replace(b"ssd", b"SSD", 1)
        return member, data

    _rewrite_bundle(bundle, tmp_path / "evil.tar", flip)
    monkeypatch.setenv("ODZOO_CACHE", str(tmp_path / "other"))
    with pytest.raises(IntegrityError, match="does not match its manifest"):
        import_bundle(layout_for(), tmp_path / "evil.tar")
    assert assert_cache_whole(tmp_path / "other") == []
    with pytest.raises(UnsafeArchiveError):
        import_bundle(layout_for(), hostile("absolute", tmp_path / "h.tar.gz"))
    assert assert_cache_whole(tmp_path / "other") == []


def test_bundle_conflicting_with_recorded_digest_is_refused(server, zoo, tmp_path, monkeypatch):
    z = zoo[SSD]
    fetch(Spec(z.name, server.url(z.url_path)))
    bundle = tmp_path / "b.tar"
    pack(layout_for(), [SSD], bundle)
    other = tmp_path / "other"
    monkeypatch.setenv("ODZOO_CACHE", str(other))
    layout = layout_for()
    (other / "digests.json").write_text(json.dumps({server.url(z.url_path): {"sha256": "0" * 64, "size": 1}}))
    with pytest.raises(IntegrityError, match="recorded"):
        import_bundle(layout, bundle)
    assert assert_cache_whole(other) == []
    shutil.rmtree(other)
