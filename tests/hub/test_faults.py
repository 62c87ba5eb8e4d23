"""Hundreds of downloads through seeded schedules of faults over real sockets on 127.0.0.1.

Each download meets one to three faults (cut connections, silently short bodies, stalls, slow
starts, HTTP 5xx and 429, damaged bodies, damaged bodies on Range requests only, Range ignored)
before its server behaves, from servers that send or omit ETag, Last-Modified, ``x-goog-hash`` and
``Content-MD5``, with and without a registry digest. Goal: no corrupt entry, no poisoned cache, no
hang, and at least 95 % of downloads done by the first call.

``run_campaign`` is shared with ``benchmarks/bench_hub.py``, which reports the same figures.
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from http_fixture import FaultyServer, self_signed
from tarball_fixture import small_zoo_archive

from zoo.errors import ZooError
from zoo.hub.cache import Layout, full_verify, read_manifest
from zoo.hub.config import NetSettings
from zoo.hub.fetch import Source, ensure_entry

pytestmark = pytest.mark.slow

# short timeouts and backoff keep a few hundred faulted downloads within seconds
FAST = NetSettings(connect_timeout=2.0, read_timeout=0.3, attempts=6, backoff_base=0.01,
                   backoff_max=0.05, retry_after_max=0.05)
HANG_S = 30.0  # a download still running after this long counts as a hang
# (etag, last_modified, md5, https) of the servers a download may meet; over https a learned
# digest is pinned, so a damaged first download would poison the cache
SERVER_KINDS = [(True, True, None, True), (False, False, None, False), (True, True, "goog", True),
                (False, False, "content-md5", False), (False, True, None, True),
                (True, False, "goog", False), (True, True, None, False), (False, False, None, True)]
FAULT_KINDS = ["drop", "short", "stall", "slow", "503", "500", "429", "corrupt", "corrupt_range",
               "norange"]


@dataclass
class CampaignResult:
    downloads: int = 0
    first_call_ok: int = 0
    corrupt_entries: int = 0
    poisoned_caches: int = 0
    hangs: int = 0
    faults_scheduled: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def first_call_pct(self) -> float:
        return 100.0 * self.first_call_ok / max(self.downloads, 1)

    def summary(self) -> dict:
        return {"downloads": self.downloads, "first_call_success_pct": round(self.first_call_pct, 2),
                "corrupt_entries": self.corrupt_entries, "poisoned_caches": self.poisoned_caches,
                "hangs": self.hangs, "faults_scheduled": self.faults_scheduled,
                "seconds": round(self.seconds, 2), "first_call_failures": self.failures[:10]}


def _schedule(rng: random.Random, size: int) -> list[dict]:
    faults = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(FAULT_KINDS)
        at = rng.randrange(1, size)
        if kind == "drop":
            faults.append({"kind": "drop", "at": at})
        elif kind == "short":
            faults.append({"kind": "short", "at": at})
        elif kind == "stall":
            faults.append({"kind": "stall", "at": at, "delay": 2 * FAST.read_timeout})
        elif kind == "slow":
            faults.append({"kind": "slow", "delay": rng.uniform(0.0, FAST.read_timeout / 2)})
        elif kind in ("503", "500"):
            faults.append({"kind": "status", "code": int(kind)})
        elif kind == "429":
            faults.append({"kind": "status", "code": 429, "headers": {"Retry-After": "0"}})
        elif kind == "corrupt":
            faults.append({"kind": "corrupt", "at": at, "spread": rng.randint(1, 7), "chunk": 997})
        elif kind == "corrupt_range":
            faults.append({"kind": "corrupt", "at": at, "ranged": True})
        else:
            faults.append({"kind": "norange", "ranged": True})
    return faults


def _true_files(archive: Path, work: Path) -> dict[str, str]:
    """sha256 of every file of the archive, unpacked by the standard library."""
    import tarfile

    out = work / "reference"
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    (top,) = list(out.iterdir())
    files = {str(p.relative_to(top).as_posix()): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in top.rglob("*") if p.is_file()}
    shutil.rmtree(out)
    return files


def _entry_is_true(layout: Layout, name: str, sha: str, truth: dict[str, str]) -> bool:
    entry = layout.entry(name)
    manifest = read_manifest(entry)
    if manifest is None or manifest.archive_sha256 != sha or not full_verify(entry, name).ok:
        return False
    files = {f.path: f.sha256 for f in manifest.files}
    return files == truth


def run_campaign(work: Path, downloads: int = 200, seed: int = 0, workers: int = 4) -> CampaignResult:
    """Run ``downloads`` faulted downloads (each into a cache of its own) and check every outcome."""
    archive = small_zoo_archive(work / "archive")
    truth = _true_files(archive.path, work)
    root = work / "site"
    rng = random.Random(seed)
    plans = []
    for i in range(downloads):
        rel = f"d{i}/{archive.name}.tar.gz"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (root / rel).exists():
            (root / rel).hardlink_to(archive.path)
        plans.append((i, rel, rng.randrange(len(SERVER_KINDS)), rng.random() < 0.5,
                      _schedule(rng, archive.size)))
    result = CampaignResult(downloads=downloads)
    tls = self_signed(work)
    old_ca = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = tls[0]
    servers = [FaultyServer(root, tls=tls if kind[3] else None).start() for kind in SERVER_KINDS]
    try:
        for srv, (etag, last_modified, md5, _) in zip(servers, SERVER_KINDS):
            srv.etag, srv.last_modified, srv.md5 = etag, last_modified, md5
        for _, rel, s, _, faults in plans:
            for fault in faults:
                servers[s].add_fault(path="/" + rel, **fault)

        def source(i: int, rel: str, s: int, pinned: bool) -> Source:
            return Source(name=archive.name, url=servers[s].url(rel),
                          sha256=archive.sha256 if pinned else None,
                          size=archive.size if pinned else None, archive_top=archive.archive_top,
                          registry_digest=pinned, meta_architecture="ssd", num_classes=90)

        def one(plan) -> tuple[int, str | None]:
            i, rel, s, pinned, _ = plan
            layout = Layout(work / "caches" / f"c{i}").ensure()
            try:
                ensure_entry(layout, source(i, rel, s, pinned), offline=False, show=False,
                             settings=FAST)
                return i, None
            except Exception as exc:  # noqa: BLE001 - anything but a ZooError is reported as such
                kind = type(exc).__name__ if isinstance(exc, ZooError) else f"unexpected {type(exc).__name__}"
                return i, f"{kind}: {str(exc)[:200]}"

        start = time.perf_counter()
        outcome: dict[int, str | None] = {}
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fault-campaign")
        futures = [pool.submit(one, plan) for plan in plans]
        deadline = time.monotonic() + HANG_S + downloads * 5.0 / workers
        for plan, fut in zip(plans, futures):
            try:
                i, error = fut.result(timeout=max(HANG_S, deadline - time.monotonic()))
                outcome[i] = error
            except FutureTimeout:
                result.hangs += 1
                outcome[plan[0]] = "hang"
        pool.shutdown(wait=False, cancel_futures=True)
        result.seconds = time.perf_counter() - start

        for i, rel, s, pinned, _ in plans:
            layout = Layout(work / "caches" / f"c{i}")
            error = outcome.get(i)
            published = layout.entry(archive.name).is_dir()
            if published and not _entry_is_true(layout, archive.name, archive.sha256, truth):
                result.corrupt_entries += 1
            if error is None and published:
                result.first_call_ok += 1
            elif error != "hang":
                result.failures.append(f"d{i}: {error}")
            if error == "hang":
                continue
            # whatever happened, the server now behaves: a healthy download must be accepted
            servers[s].clear_faults("/" + rel)
            try:
                ensure_entry(layout, source(i, rel, s, pinned), offline=False, show=False,
                             force=True, settings=FAST)
                if not _entry_is_true(layout, archive.name, archive.sha256, truth):
                    result.corrupt_entries += 1
            except Exception:  # noqa: BLE001 - a healthy download refused: the cache is poisoned
                result.poisoned_caches += 1
        result.faults_scheduled = sum(len(plan[4]) for plan in plans)
    finally:
        for srv in servers:
            srv.stop()
        if old_ca is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old_ca
    return result


@pytest.mark.timeout(300)
def test_faulted_downloads_never_corrupt_or_poison_the_cache(tmp_path):
    result = run_campaign(tmp_path, downloads=200, seed=20261201)
    print(result.summary())
    assert result.hangs == 0
    assert result.corrupt_entries == 0
    assert result.poisoned_caches == 0
    assert result.first_call_pct >= 95.0, result.failures
    assert not [f for f in result.failures if "unexpected" in f]  # every failure is a ZooError
