"""Many processes and threads, and processes killed with SIGKILL mid-download or mid-extraction."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from http_fixture import FaultyServer
from tarball_fixture import SSD, Spec, assert_cache_whole

from zoo.hub import fetch
from zoo.hub.cache import Layout
from zoo.hub.lock import is_held

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, types
spec = types.SimpleNamespace(**json.loads(sys.argv[1]))
if len(sys.argv) > 2 and sys.argv[2] == "kill-during-extract":
    import os, signal
    import zoo.hub.extract as ex
    real, calls = ex._write_member, []
    def write_then_die(*a, **k):
        rec = real(*a, **k)
        calls.append(rec)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return rec
    ex._write_member = write_then_die
from zoo.hub import fetch
print(fetch(spec), flush=True)
"""


def _spec(server: FaultyServer, z) -> Spec:
    return Spec(z.name, server.url(z.url_path), z.sha256, z.size, z.archive_top)


def _child(spec: Spec, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec.__dict__), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_eight_processes_cold_cache_one_download(server, zoo, isolated_env):
    z = zoo[SSD]
    server.add_fault("trickle", chunk=64 << 10, delay=0.03)  # the one download takes ~0.75 s
    procs = [_child(_spec(server, z)) for _ in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    paths = {o[0].strip() for o in outs}
    assert paths == {str(isolated_env / "models" / SSD)}
    assert server.count() == 1 and server.bytes_sent() == z.size
    assert assert_cache_whole(isolated_env) == [SSD]


def test_threads_share_one_download(server, zoo, isolated_env):
    z = zoo[SSD]
    server.add_fault("trickle", chunk=64 << 10, delay=0.02)
    results, errors = [], []

    def work():
        try:
            results.append(fetch(_spec(server, z)))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(set(results)) == 1 and len(results) == 8
    assert server.count() == 1
    assert_cache_whole(isolated_env)


def _wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_sigkill_during_download_then_resume(server, zoo, isolated_env):
    z = zoo[SSD]
    half = z.size // 2
    server.add_fault("stall", at=half, delay=4)
    part = isolated_env / "downloads" / f"{SSD}@{z.sha256}.part"
    proc = _child(_spec(server, z))
    _wait_for(lambda: part.exists() and part.stat().st_size >= half)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert assert_cache_whole(isolated_env) == []  # nothing half-made is visible
    assert not is_held(Layout(isolated_env), SSD)  # the dead process's lock is gone
    server.reset()
    path = fetch(_spec(server, z))
    assert [r.range for r in server.requests] == [f"bytes={half}-"]
    assert server.bytes_sent() == z.size - half  # only the missing half again
    assert path == isolated_env / "models" / SSD
    assert_cache_whole(isolated_env)


def test_sigkill_during_extraction_then_rerun(server, zoo, isolated_env):
    z = zoo[SSD]
    proc = _child(_spec(server, z), "kill-during-extract")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert assert_cache_whole(isolated_env) == []
    stale = list((isolated_env / "tmp" / SSD).iterdir())
    assert stale, "the killed extraction left its work folder"
    server.reset()
    path = fetch(_spec(server, z))
    assert server.count() == 0  # the verified archive from the killed run was reused
    assert not any(p.exists() for p in stale)  # stale work folders were cleaned
    assert assert_cache_whole(isolated_env) == [SSD]
    assert (path / "pipeline.config").is_file()
