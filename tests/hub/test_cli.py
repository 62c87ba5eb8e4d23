"""``odzoo download / cache / pack / import`` end to end, and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_calls import run
from tarball_fixture import SSD, assert_cache_whole

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("mirror")

ALIAS = "ssd_mobilenet_v2_fpnlite_320"


def test_download_ls_verify_json(server, capsys, isolated_env):
    code, out, _ = run(capsys, "download", ALIAS, "--json")
    assert code == 0
    (row,) = json.loads(out)
    assert row["ok"] and row["path"] == str(isolated_env / "models" / SSD)
    code, out, _ = run(capsys, "download", ALIAS)
    assert code == 0 and out.strip() == str(isolated_env / "models" / SSD)
    assert server.count() == 1
    code, out, _ = run(capsys, "cache", "ls", "--json")
    listing = json.loads(out)
    assert listing["cache"] == str(isolated_env)
    assert [e["name"] for e in listing["entries"]] == [SSD]
    code, out, _ = run(capsys, "cache", "ls")
    assert SSD in out and "ok" in out
    code, out, _ = run(capsys, "cache", "verify", "--json")
    assert code == 0 and json.loads(out)[0]["status"] == "ok"


def test_download_many_in_parallel_reports_each(server, zoo, capsys, isolated_env):
    centernet = zoo["centernet_mobilenetv2fpn_512x512_coco17_od"]
    missing = server.url("/missing/nope.tar.gz")
    code, out, err = run(capsys, "download", ALIAS, str(centernet.path), missing, "-j", "3")
    assert code == 2
    assert "HTTP 404" in err and len(err.strip().splitlines()) == 1
    assert len(out.strip().splitlines()) == 2
    assert sorted(assert_cache_whole(isolated_env)) == sorted([SSD, centernet.name])


def test_download_from_file(server, zoo, capsys, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    code, _, _ = run(capsys, "download", ALIAS, "--from-file", str(zoo[SSD].path))
    assert code == 0 and server.count() == 0
    assert assert_cache_whole(isolated_env) == [SSD]


def test_rm_prune_pack_import(server, capsys, tmp_path, isolated_env, monkeypatch):
    assert run(capsys, "download", ALIAS)[0] == 0
    (isolated_env / "downloads" / "junk.part").write_bytes(b"123")
    code, out, _ = run(capsys, "cache", "prune", "--dry-run", "--json")
    report = json.loads(out)
    assert report["dry_run"] and [i["kind"] for i in report["items"]] == ["partial"]
    assert (isolated_env / "downloads" / "junk.part").exists()
    code, out, _ = run(capsys, "cache", "prune")
    assert code == 0 and "removed partial" in out
    assert not (isolated_env / "downloads" / "junk.part").exists()
    bundle = tmp_path / "b.tar"
    code, out, _ = run(capsys, "pack", ALIAS, "-o", str(bundle), "--json")
    assert code == 0 and json.loads(out)["entries"][0]["name"] == SSD
    code, out, _ = run(capsys, "cache", "rm", ALIAS)
    assert code == 0 and f"removed {SSD}" in out
    assert assert_cache_whole(isolated_env) == []
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    code, out, _ = run(capsys, "import", str(bundle))
    assert code == 0 and f"imported {SSD}" in out
    code, out, _ = run(capsys, "download", ALIAS)
    assert code == 0 and server.count() == 1  # only the first download ever reached the server


def test_errors_are_one_line(server, capsys, monkeypatch):
    code, _, err = run(capsys, "cache", "rm", ALIAS)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not in the cache" in err
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    code, _, err = run(capsys, "download", ALIAS)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "odzoo download" in err and "odzoo import" in err


def test_console_errors_have_no_traceback(tmp_path, isolated_env):
    env = dict(os.environ, PYTHONPATH=str(ROOT), ODZOO_OFFLINE="1")
    for argv in (["download", "no_such_model_anywhere"], ["import", str(tmp_path / "missing.tar")],
                 ["download", ALIAS]):
        proc = subprocess.run([sys.executable, "-m", "zoo.cli", *argv], env=env, text=True,
                              capture_output=True, timeout=120, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
