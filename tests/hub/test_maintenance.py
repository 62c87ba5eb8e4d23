"""Cache maintenance never destroys good data: content decides, damaged entries are quarantined,
prune deletes only what its policy names, and a damaged entry fails a load with one clear line."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from cli_calls import run
from tarball_fixture import CENTERNET, SSD, Spec, assert_cache_whole

from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.errors import ArgumentError, CacheError
from zoo.hub import fetch, layout_for, list_entries, prune, read_manifest, verify
from zoo.hub.cache import MANIFEST_NAME
from zoo.loading import load
from zoo.registry import get

pytestmark = pytest.mark.usefixtures("mirror")

ALIAS = "ssd_mobilenet_v2_fpnlite_320"


def ls(capsys) -> dict[str, dict]:
    code, out, _ = run(capsys, "cache", "ls", "--json")
    assert code == 0
    return {e["name"]: e for e in json.loads(out)["entries"]}


def flip_byte_keep_stat(path, at: float = 0.5) -> None:
    """Corrupt one byte; size and mtime stay as they were (bit rot the cheap check cannot see)."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(int(st.st_size * at))
        b = fh.read(1)
        fh.seek(int(st.st_size * at))
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_copied_cache_is_unverified_kept_by_prune_and_rerecorded_by_verify(
        server, capsys, tmp_path, monkeypatch):
    assert run(capsys, "download", ALIAS)[0] == 0
    copy = tmp_path / "copied-cache"
    subprocess.run(["cp", "-r", os.environ["ODZOO_CACHE"], str(copy)], check=True)  # new file times
    monkeypatch.setenv("ODZOO_CACHE", str(copy))
    entry = ls(capsys)[SSD]
    assert entry["status"] == "unverified" and "cache verify" in entry["detail"]
    code, out, _ = run(capsys, "cache", "prune", "--json")
    assert code == 0 and json.loads(out)["items"] == []
    assert (copy / "models" / SSD / "pipeline.config").is_file()
    code, out, _ = run(capsys, "cache", "verify", "--json")
    (result,) = json.loads(out)
    assert code == 0 and result["status"] == "ok" and "recorded again" in result["detail"]
    assert ls(capsys)[SSD]["status"] == "ok"  # the fast check passes again
    os.utime(copy / "models" / SSD / "checkpoint" / "checkpoint")  # touch
    assert ls(capsys)[SSD]["status"] == "unverified"
    assert prune(layout_for()) == [] and assert_cache_whole(copy) == [SSD]
    assert server.count() == 1  # only the first download ever reached the server


def test_verify_offline_quarantines_and_load_refuses_until_download_force(
        server, capsys, isolated_env, monkeypatch):
    assert run(capsys, "download", ALIAS)[0] == 0
    entry = isolated_env / "models" / SSD
    flip_byte_keep_stat(entry / "pipeline.config")
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    code, out, _ = run(capsys, "cache", "verify")
    assert code == 1 and f"{SSD}: quarantined" in out and "odzoo cache rm" in out
    assert (entry / "pipeline.config").is_file() and read_manifest(entry) is not None
    info = ls(capsys)[SSD]
    assert info["status"] == "quarantined" and f"odzoo download {SSD} --force" in info["detail"]
    for argv in (["cache", "prune"], ["cache", "prune", "--older-than", "0"],
                 ["cache", "prune", "--max-size", "0"]):
        assert run(capsys, *argv)[0] == 0
        assert entry.is_dir(), argv  # quarantined entries go only when asked by name or --damaged
    with pytest.raises(CacheError, match="quarantined.*odzoo download .* --force.*odzoo cache rm"):
        fetch(ALIAS)
    with pytest.raises(CacheError, match=f"{SSD} is quarantined"):
        load(ALIAS, offline=True)
    code, _, err = run(capsys, "download", ALIAS)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "quarantined" in err
    monkeypatch.delenv("ODZOO_OFFLINE")
    assert run(capsys, "download", ALIAS, "--force")[0] == 0
    assert ls(capsys)[SSD]["status"] == "ok" and assert_cache_whole(isolated_env) == [SSD]


def test_verify_with_unreadable_manifest_quarantines_unless_a_digest_vouches(
        server, zoo, capsys, isolated_env):
    assert run(capsys, "download", ALIAS)[0] == 0
    entry = isolated_env / "models" / SSD
    (isolated_env / "digests.json").unlink(missing_ok=True)  # nothing to check a new download against
    (entry / MANIFEST_NAME).write_text("{not json")
    (result,) = verify(layout_for())
    assert result.status == "quarantined" and "manifest" in result.detail
    assert (entry / "checkpoint").is_dir()
    assert ls(capsys)[SSD]["status"] == "quarantined"
    # with the archive's digest known, the registry's archive is downloaded, checked and published
    url = get(SSD).url
    (isolated_env / "digests.json").write_text(json.dumps({url: {"sha256": zoo[SSD].sha256,
                                                                 "size": zoo[SSD].size}}))
    (result,) = verify(layout_for())
    assert result.status == "repaired", result.detail
    assert assert_cache_whole(isolated_env) == [SSD]
    code, out, _ = run(capsys, "cache", "rm", SSD)  # deleting is an explicit request
    assert code == 0 and not entry.exists()


def test_repair_publishes_only_verified_bytes(server, zoo, capsys, isolated_env):
    assert run(capsys, "download", ALIAS)[0] == 0
    entry = isolated_env / "models" / SSD
    data = entry / "checkpoint" / "ckpt-0.data-00000-of-00001"
    flip_byte_keep_stat(data)
    damaged = data.read_bytes()
    server.reset()
    server.add_fault("corrupt", at=zoo[SSD].size // 2, times=100)  # every copy served is wrong
    (result,) = verify(layout_for())
    assert result.status == "quarantined" and server.count() >= 1
    assert data.read_bytes() == damaged  # the entry was not replaced by unverified bytes
    server.reset()
    (result,) = verify(layout_for())
    assert result.status == "repaired", result.detail
    assert assert_cache_whole(isolated_env) == [SSD]


BAD_PRUNE_ARGS = [
    ("--older-than", "-5"), ("--older-than", "nan"), ("--older-than", "inf"), ("--older-than", "-inf"),
    ("--older-than", "soon"), ("--older-than", ""), ("--max-size", "-1G"), ("--max-size", "nan"),
    ("--max-size", "inf"), ("--max-size", "lots"), ("--max-size", "1.5XB"), ("--max-size", "-0"),
]


@pytest.mark.parametrize(("option", "value"), BAD_PRUNE_ARGS)
def test_prune_rejects_bad_arguments_before_any_work(option, value, zoo, capsys, isolated_env):
    entry = fetch(zoo[SSD].path)
    old = time.time() - 400 * 86400
    os.utime(entry / MANIFEST_NAME, (old, old))
    junk = isolated_env / "downloads" / "junk.part"
    junk.write_bytes(b"123")
    code, out, err = run(capsys, "cache", "prune", f"{option}={value}")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert option in err and "Traceback" not in err
    assert junk.exists() and entry.is_dir()


def test_prune_policies_in_python_are_checked_too(isolated_env):
    for kwargs in ({"older_than_days": -5}, {"older_than_days": float("nan")},
                   {"max_size": "-1"}, {"max_size": float("inf")}):
        with pytest.raises(ArgumentError):
            prune(layout_for(), **kwargs)


def test_prune_max_size_removes_least_recently_used(zoo, capsys, isolated_env):
    ssd = fetch(zoo[SSD].path)
    centernet = fetch(zoo[CENTERNET].path)
    old = time.time() - 10 * 86400
    os.utime(ssd / MANIFEST_NAME, (old, old))
    sizes = {e.name: e.size_bytes for e in list_entries(layout_for())}
    budget = sizes[CENTERNET] + 1
    code, out, _ = run(capsys, "cache", "prune", "--max-size", str(budget), "--dry-run", "--json")
    assert code == 0 and [(i["kind"], i["path"]) for i in json.loads(out)["items"]] == [
        ("over-size", str(ssd))]
    assert ssd.is_dir()
    code, out, _ = run(capsys, "cache", "prune", "--max-size", str(budget))
    assert code == 0 and "over-size" in out
    assert assert_cache_whole(isolated_env) == [CENTERNET] and centernet.is_dir()


def test_prune_removes_damaged_entry_only_when_a_kept_archive_rebuilds_it(
        server, zoo, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_KEEP_ARCHIVES", "1")
    z = zoo[SSD]
    spec = Spec(z.name, server.url(z.url_path), z.sha256, z.size, z.archive_top)
    entry = fetch(spec)
    (entry / "pipeline.config").write_text("cut")
    # the archive is kept, but nothing the cache knows names its digest: a load could not use it
    assert prune(layout_for()) == [] and entry.is_dir()
    (isolated_env / "digests.json").write_text(json.dumps({spec.url: {"sha256": z.sha256, "size": z.size}}))
    assert [i.kind for i in prune(layout_for())] == ["damaged"] and not entry.exists()
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    server.reset()
    assert fetch(Spec(z.name, spec.url)) == entry and server.count() == 0
    assert assert_cache_whole(isolated_env) == [SSD]


def test_bit_rot_at_load_names_the_entry_in_one_line(capsys, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    tarball = FIXTURES / "tarballs" / f"{SSD}.tar.gz"
    assert run(capsys, "download", SSD, "--from-file", str(tarball))[0] == 0
    flip_byte_keep_stat(isolated_env / "models" / SSD / "checkpoint" / "ckpt-0.data-00000-of-00001")
    code, out, err = run(capsys, "detect", str(INPUT_IMAGE), "--model", SSD, "--offline")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert SSD in lines[0] and "damaged" in lines[0] and f"odzoo cache verify {SSD}" in lines[0]
    assert "ckpt-0.data" in lines[0]


def test_entry_that_is_a_link_is_listed_damaged_and_removed_alone(capsys, tmp_path, isolated_env):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the cache's")
    layout_for()  # creates models/
    os.symlink(outside, isolated_env / "models" / "linked")
    info = ls(capsys)["linked"]
    assert info["status"] == "damaged" and "symbolic link" in info["detail"]
    assert prune(layout_for()) == []
    assert run(capsys, "cache", "rm", "linked")[0] == 0
    assert not os.path.lexists(isolated_env / "models" / "linked")
    assert (outside / "keep.txt").read_text() == "not the cache's"
