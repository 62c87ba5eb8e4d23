#!/usr/bin/env python3
"""Hub client benchmark: loopback download throughput against curl, bytes fetched again after a
kill at 50 %, the cost of checking a cached entry on load, and a fault campaign (downloads through
seeded schedules of cut connections, 5xx/429, damaged bodies, ignored Range and slow starts:
corrupt entries, poisoned caches, hangs, first-call success).

    python3 benchmarks/bench_hub.py [--size-mb 200] [--repeat 3] [--fault-downloads 300]
                                    [--out benchmarks/results/hub.json]

Everything happens in a temporary folder on 127.0.0.1; prints a summary and writes JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "hub"))

from http_fixture import FaultyServer

FIXTURE = ROOT / ".." / "shared" / "fixtures" / "tarballs" / \
    "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8.tar.gz"

CHILD = """
import json, sys
sys.path.insert(0, sys.argv[3])
from zoo.hub.config import NetSettings
from zoo.hub.download import Downloader
from pathlib import Path
d = Downloader(Path(sys.argv[1]), "bench", expected_sha256=sys.argv[2], expected_size=None,
               settings=NetSettings.from_env(), show=False, label="bench")
d.run([sys.argv[4]])
"""


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for i in range(size >> 20):
            chunk = block[i % 251:] + block[: i % 251]  # cheap, distinct-looking blocks
            fh.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def bench_throughput(srv: FaultyServer, url: str, sha: str, size: int, work: Path, repeat: int) -> dict:
    from zoo.hub.config import NetSettings
    from zoo.hub.download import Downloader

    ours, curl = [], []
    for _ in range(repeat):
        out = work / "curl.bin"
        t = time.perf_counter()
        subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
        curl.append(time.perf_counter() - t)
        out.unlink()
        downloads = work / "dl"
        t = time.perf_counter()
        blob = Downloader(downloads, "bench", expected_sha256=sha, expected_size=size,
                          settings=NetSettings(), show=False, label="bench").run([url])
        ours.append(time.perf_counter() - t)
        assert blob.sha256 == sha
        shutil.rmtree(downloads)
    best_ours, best_curl = min(ours), min(curl)
    return {
        "file_bytes": size,
        "ours_seconds": ours, "curl_seconds": curl,
        "ours_MBps": size / best_ours / 1e6, "curl_MBps": size / best_curl / 1e6,
        "ratio_vs_curl": best_curl / best_ours,
        "ratio_median_of_pairs": statistics.median(c / o for c, o in zip(curl, ours)),
        "note": "best of runs; ours includes streaming sha256 verification, curl does not hash",
    }


def _kill_and_resume(srv: FaultyServer, url: str, sha: str, size: int, work: Path, fault: dict,
                     client: str = "odzoo") -> dict:
    half = size // 2
    downloads = work / "resume"
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir()
    part = downloads / "bench.part"
    srv.reset()
    srv.add_fault(**fault)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if client == "curl":
        cmd = ["curl", "-sS", "-o", str(part), url]
    else:
        cmd = [sys.executable, "-c", CHILD, str(downloads), sha, str(ROOT), url]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if part.exists() and part.stat().st_size >= half:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    on_disk = part.stat().st_size
    first_sent = srv.bytes_sent()
    srv.reset()
    from zoo.hub.config import NetSettings
    from zoo.hub.download import Downloader

    t = time.perf_counter()
    if client == "curl":
        subprocess.run(["curl", "-sS", "-C", "-", "-o", str(part), url], check=True)
        assert hashlib.sha256(part.read_bytes()).hexdigest() == sha
    else:
        blob = Downloader(downloads, "bench", expected_sha256=sha, expected_size=None,
                          settings=NetSettings(), show=False, label="bench").run([url])
        assert blob.sha256 == sha
    resume_s = time.perf_counter() - t
    second_sent = srv.bytes_sent()
    again = first_sent + second_sent - size
    return {
        "killed_at_bytes": on_disk, "server_sent_before_kill": first_sent,
        "resume_range": srv.requests[0].range, "bytes_fetched_again": again,
        "fraction_fetched_again": again / size, "resume_seconds": resume_s,
    }


def bench_resume(srv: FaultyServer, url: str, sha: str, size: int, work: Path) -> dict:
    """Two ways to kill at 50 %: while the server pauses there (measures what the client loses of
    what it received), and in the middle of a full-speed stream (adds what sat in the kernel's
    socket buffers and what arrived between the parent's poll and the kill)."""
    return {
        "server_pauses_at_50pct": _kill_and_resume(
            srv, url, sha, size, work, {"kind": "stall", "at": size // 2, "delay": 30}),
        "full_speed_stream": _kill_and_resume(
            srv, url, sha, size, work, {"kind": "trickle", "chunk": 1 << 20, "delay": 0.0}),
        "full_speed_stream_curl_baseline": _kill_and_resume(
            srv, url, sha, size, work, {"kind": "trickle", "chunk": 1 << 20, "delay": 0.0},
            client="curl"),
    }


def bench_load_check(work: Path, repeat: int = 200) -> dict:
    os.environ["ODZOO_CACHE"] = str(work / "cache")
    os.environ["ODZOO_QUIET"] = "1"
    from zoo.hub import fetch, quick_check

    path = fetch(FIXTURE.resolve())
    times, quick = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        assert fetch(FIXTURE.resolve()) == path
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert quick_check(path) is not None
        quick.append(time.perf_counter() - t)
    times.sort()
    return {
        "entry_files": sum(1 for p in path.rglob("*") if p.is_file()),
        "fetch_cached_median_ms": statistics.median(times) * 1e3,
        "fetch_cached_p95_ms": times[int(0.95 * len(times))] * 1e3,
        "quick_check_median_ms": statistics.median(quick) * 1e3,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fault-downloads", type=int, default=300)
    ap.add_argument("--fault-seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hub.json"))
    args = ap.parse_args()
    if not shutil.which("curl"):
        print("curl is needed for the throughput comparison", file=sys.stderr)
        return 2
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "platform": platform.platform(),
                                 "load_average_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="odzoo-bench-") as tmp:
        work = Path(tmp)
        site = work / "site"
        site.mkdir()
        size = args.size_mb << 20
        sha = _random_file(site / "big.bin", size)
        with FaultyServer(site) as srv:
            url = srv.url("/big.bin")
            results["throughput"] = bench_throughput(srv, url, sha, size, work, args.repeat)
            results["resume_after_kill_at_50pct"] = bench_resume(srv, url, sha, size, work)
        results["cached_load_check"] = bench_load_check(work)
        from test_hub_faults import run_campaign

        (work / "faults").mkdir()
        results["fault_campaign"] = run_campaign(work / "faults", downloads=args.fault_downloads,
                                                 seed=args.fault_seed).summary()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    t, r, c = results["throughput"], results["resume_after_kill_at_50pct"], results["cached_load_check"]
    print(f"throughput: ours {t['ours_MBps']:.0f} MB/s, curl {t['curl_MBps']:.0f} MB/s (best of "
          f"{args.repeat}), ratio {t['ratio_vs_curl']:.2f}, median of paired runs "
          f"{t['ratio_median_of_pairs']:.2f} (goal >= 0.9)")
    for how, row in r.items():
        print(f"kill at 50% ({how}): resumed with {row['resume_range']}, fetched again "
              f"{row['bytes_fetched_again']} bytes ({100 * row['fraction_fetched_again']:.3f} %, "
              "goal <= 1 %)")
    print(f"cached load check: fetch() median {c['fetch_cached_median_ms']:.2f} ms "
          f"(p95 {c['fetch_cached_p95_ms']:.2f} ms), quick_check {c['quick_check_median_ms']:.2f} ms "
          f"for {c['entry_files']} files (goal <= 10 ms)")
    f = results["fault_campaign"]
    print(f"faults: {f['downloads']} downloads ({f['faults_scheduled']} faults), corrupt entries "
          f"{f['corrupt_entries']}, poisoned caches {f['poisoned_caches']}, hangs {f['hangs']}, "
          f"first-call success {f['first_call_success_pct']:.1f} % (goal 0, 0, 0, >= 95 %) "
          f"in {f['seconds']:.1f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
