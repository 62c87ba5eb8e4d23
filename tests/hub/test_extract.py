"""Extraction safety: hostile archives are refused and leave nothing behind."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from http_fixture import FaultyServer
from tarball_fixture import (
    CENTERNET,
    HOSTILE_KINDS,
    Spec,
    assert_cache_whole,
    hostile,
)

from zoo.errors import DamagedArchiveError, IntegrityError, UnsafeArchiveError
from zoo.hub import fetch, read_manifest
from zoo.hub.extract import Limits, extract


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_archive_is_refused_and_nothing_is_left(kind, tmp_path):
    archive = hostile(kind, tmp_path / f"{kind}.tar.gz")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    before = _listing(tmp_path)
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, sandbox / "out", limits=Limits(max_members=50))
    assert str(archive) in str(info.value)
    assert not (sandbox / "out").exists()
    assert _listing(tmp_path) == before
    assert not Path("/tmp/odzoo-evil.txt").exists()


def test_default_limits_refuse_a_huge_archive_before_reading_data(tmp_path):
    with pytest.raises(UnsafeArchiveError, match="more than"):
        extract(hostile("too_large", tmp_path / "big.tar.gz"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_total_size_limit(tmp_path, zoo):
    z = next(iter(zoo.values()))
    with pytest.raises(UnsafeArchiveError, match="bytes"):
        extract(z.path, tmp_path / "out", limits=Limits(max_total_bytes=1000))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("payload", [b"\x1f\x8b\x08\x00garbage" * 10, b"<html>503</html>" * 40])
def test_not_a_tar_is_damaged_not_hostile(tmp_path, payload):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(payload)
    with pytest.raises(DamagedArchiveError) as info:
        extract(junk, tmp_path / "out")
    assert isinstance(info.value, IntegrityError) and not isinstance(info.value, UnsafeArchiveError)
    assert str(junk) in str(info.value)
    assert not (tmp_path / "out").exists()


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, payload
                tar.addfile(info)
    return path


def test_links_inside_the_archive_are_kept(tmp_path):
    archive = _tar(tmp_path / "ok.tar.gz", [
        ("m", "dir", b""), ("m/pipeline.config", "file", b"model {}"),
        ("m/checkpoint/", "dir", b""), ("m/checkpoint/a", "file", b"abc"),
        ("m/alias.config", "sym", "pipeline.config"), ("m/checkpoint/b", "hard", "m/checkpoint/a"),
    ])
    result = extract(archive, tmp_path / "out")
    out = tmp_path / "out"
    assert result.top == "m"
    assert (out / "alias.config").is_symlink() and (out / "alias.config").read_bytes() == b"model {}"
    assert (out / "checkpoint" / "b").read_bytes() == b"abc" and not (out / "checkpoint" / "b").is_symlink()
    assert {f.path for f in result.files} == {"pipeline.config", "checkpoint/a", "checkpoint/b"}
    assert result.symlinks == {"alias.config": "pipeline.config"}


def test_flat_archive_is_extracted_as_is(tmp_path):
    archive = _tar(tmp_path / "flat.tar", [("pipeline.config", "file", b"x"), ("checkpoint/c", "file", b"y")])
    result = extract(archive, tmp_path / "out")
    assert result.top is None and (tmp_path / "out" / "checkpoint" / "c").read_bytes() == b"y"


def test_archive_top_differing_from_the_name(zoo, isolated_env):
    z = zoo[CENTERNET]
    path = fetch(Spec(z.name, z.path.as_uri(), z.sha256, z.size, z.archive_top))
    assert path.name == CENTERNET and (path / "pipeline.config").is_file()
    assert read_manifest(path).archive_top == "centernet_mobilenetv2_fpn_od"
    assert assert_cache_whole(isolated_env) == [CENTERNET]


@pytest.mark.parametrize("kind", ["absolute", "symlink_escape", "device"])
def test_hostile_download_leaves_a_clean_cache(kind, tmp_path, isolated_env):
    site = tmp_path / "site"
    site.mkdir()
    hostile(kind, site / "evil.tar.gz")
    with FaultyServer(site) as srv, pytest.raises(UnsafeArchiveError):
        fetch(Spec("evil", srv.url("/evil.tar.gz")))
    assert assert_cache_whole(isolated_env) == []
    assert not any((isolated_env / "tmp").rglob("*.config"))
    assert not (isolated_env / "digests.json").exists()
    assert not list((isolated_env / "downloads").iterdir())


def test_shared_fixture_tarball_extracts_with_saved_model(isolated_env):
    from tests.conftest import FIXTURES

    archive = FIXTURES / "tarballs" / "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz"
    path = fetch(archive)
    assert (path / "saved_model" / "saved_model.pb").is_file()
    assert (path / "checkpoint" / "ckpt-0.data-00000-of-00001").is_file()
    assert read_manifest(path).archive_sha256 == \
        "1d7f1e55d0d6c37019af457a7a90407d776097653efe1fff2f46eb632e941aa7"
    assert_cache_whole(isolated_env)
