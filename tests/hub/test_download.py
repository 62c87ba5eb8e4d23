"""Downloads over a real socket: faults, resume, retries, mirrors, offline mode, trust on first use."""
from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from http_fixture import FaultyServer, self_signed
from tarball_fixture import SSD, Spec, assert_cache_whole, spec_of

from zoo.errors import DownloadError, IntegrityError, OfflineError
from zoo.hub import fetch, read_manifest


@pytest.fixture
def root(zoo, zoo_root):
    return zoo_root / "root"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setenv("ODZOO_RETRIES", "3")


def direct(server: FaultyServer, z, *, with_digest: bool = True) -> Spec:
    """A spec whose URL is the local server itself (no mirror, no fallback to the real host)."""
    return Spec(z.name, server.url(z.url_path), z.sha256 if with_digest else None,
                z.size if with_digest else None, z.archive_top)


def test_fetch_through_mirror_builds_a_whole_entry(server, ssd, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_MIRROR", server.base)
    path = fetch(spec_of(ssd))
    assert path == isolated_env / "models" / SSD
    assert (path / "pipeline.config").is_file() and (path / "checkpoint" / "ckpt-0.index").is_file()
    manifest = read_manifest(path)
    assert manifest.archive_sha256 == ssd.sha256 and manifest.archive_top == SSD
    assert manifest.source == ssd.url  # the canonical URL, not the mirror's
    assert server.count() == 1 and server.requests[0].path == ssd.url_path
    assert assert_cache_whole(isolated_env) == [SSD]
    assert not list((isolated_env / "downloads").iterdir())  # the .part is gone once installed
    assert fetch(spec_of(ssd)) == path
    assert server.count() == 1  # served from the cache: no second request


def test_dropped_connection_resumes_with_range(server, ssd, isolated_env):
    server.add_fault("drop", at=300_000)
    fetch(direct(server, ssd))
    assert [r.range for r in server.requests] == [None, "bytes=300000-"]
    assert [r.status for r in server.requests] == [200, 206]
    assert server.bytes_sent() == ssd.size  # nothing fetched twice
    assert_cache_whole(isolated_env)


def test_503_then_ok_is_retried(server, ssd, isolated_env):
    server.add_fault("status", code=503)
    fetch(direct(server, ssd))
    assert [r.status for r in server.requests] == [503, 200]
    assert_cache_whole(isolated_env)


def test_429_honours_retry_after(server, ssd, isolated_env):
    server.add_fault("status", code=429, headers={"Retry-After": "1"})
    t = time.perf_counter()
    fetch(direct(server, ssd))
    assert time.perf_counter() - t >= 1.0
    assert [r.status for r in server.requests] == [429, 200]
    assert_cache_whole(isolated_env)


def test_truncated_body_without_length_resumes_when_size_is_known(server, ssd, isolated_env):
    server.add_fault("short", at=250_000)
    fetch(direct(server, ssd))
    assert [r.range for r in server.requests] == [None, "bytes=250000-"]
    assert_cache_whole(isolated_env)


def test_truncated_body_with_nothing_known_is_fetched_again_from_zero(server, ssd, isolated_env):
    server.add_fault("short", at=250_000)
    path = fetch(direct(server, ssd, with_digest=False))
    assert [r.range for r in server.requests] == [None, None]  # discarded, not resumed
    assert read_manifest(path).archive_sha256 == ssd.sha256
    assert assert_cache_whole(isolated_env) == [SSD]


def test_truncated_body_twice_with_nothing_known_is_never_trusted(server, ssd, isolated_env):
    server.add_fault("short", at=250_000, times=2)
    with pytest.raises(IntegrityError) as info:
        fetch(direct(server, ssd, with_digest=False))
    text = str(info.value)
    assert "damaged 2 times" in text and "truncated" in text and "--from-file" in text
    assert server.count() == 2
    assert assert_cache_whole(isolated_env) == []
    assert not (isolated_env / "digests.json").exists()  # nothing learned from broken bytes
    assert not list((isolated_env / "downloads").iterdir())
    fetch(direct(server, ssd, with_digest=False))  # the next healthy download is not refused
    assert assert_cache_whole(isolated_env) == [SSD]


def test_content_length_shortfall_resumes(server, ssd, isolated_env):
    server.add_fault("drop", at=1)
    server.add_fault("drop", at=100_000)
    fetch(direct(server, ssd))
    assert [r.range for r in server.requests] == [None, "bytes=1-", "bytes=100001-"]
    assert_cache_whole(isolated_env)


def test_corrupted_body_is_fetched_again_from_zero(server, ssd, isolated_env):
    server.add_fault("corrupt", at=1234)
    fetch(direct(server, ssd))
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), (None, 200)]
    assert assert_cache_whole(isolated_env) == [SSD]


def test_body_corrupted_twice_is_rejected_then_refetched(server, ssd, isolated_env):
    server.add_fault("corrupt", at=1234, times=2)
    with pytest.raises(IntegrityError) as info:
        fetch(direct(server, ssd))
    assert ssd.sha256 in str(info.value)
    assert assert_cache_whole(isolated_env) == []
    fetch(direct(server, ssd))
    assert assert_cache_whole(isolated_env) == [SSD]


def test_server_ignoring_range_restarts_from_zero(server, ssd, isolated_env):
    server.add_fault("drop", at=300_000)
    server.ignore_range = True
    fetch(direct(server, ssd))
    assert [r.status for r in server.requests] == [200, 200]
    assert server.requests[1].range == "bytes=300000-"
    assert read_manifest(isolated_env / "models" / SSD).archive_sha256 == ssd.sha256
    assert_cache_whole(isolated_env)


def test_stalled_server_times_out_and_resumes(server, ssd, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_TIMEOUT", "0.5")
    server.add_fault("stall", at=200_000, delay=12)
    t = time.perf_counter()
    fetch(direct(server, ssd))
    assert time.perf_counter() - t < 10  # gave up on the stall after its 0.5 s read timeout
    assert [r.range for r in server.requests] == [None, "bytes=200000-"]
    assert_cache_whole(isolated_env)


def test_slow_trickle_completes(server, ssd, isolated_env, monkeypatch):
    monkeypatch.setenv("ODZOO_TIMEOUT", "0.5")
    server.add_fault("trickle", chunk=128 << 10, delay=0.02)
    fetch(direct(server, ssd))
    assert server.count() == 1
    assert_cache_whole(isolated_env)


def test_persistent_5xx_gives_a_download_error_with_a_manual_command(server, ssd, isolated_env, tmp_path):
    spec = direct(server, ssd)
    server.add_fault("status", code=500, times=3)
    with pytest.raises(DownloadError) as info:
        fetch(spec)
    text = str(info.value)
    for needle in (spec.url, ssd.sha256, str(isolated_env / "models" / SSD), "curl -L -o",
                   "--from-file", "HTTP 500"):
        assert needle in text
    assert server.count() == 3 and assert_cache_whole(isolated_env) == []
    # the manual route the message describes works
    dest = tmp_path / f"{SSD}.tar.gz"
    subprocess.run(["curl", "-sS", "-L", "-o", str(dest), spec.url], check=True)
    assert fetch(spec, from_file=dest) == isolated_env / "models" / SSD
    assert_cache_whole(isolated_env)


def test_from_file_with_wrong_bytes_is_refused(server, ssd, tmp_path, isolated_env):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"not the archive")
    with pytest.raises(IntegrityError):
        fetch(direct(server, ssd), from_file=bad)
    assert assert_cache_whole(isolated_env) == []


def test_404_is_not_retried(server, ssd, isolated_env):
    spec = Spec("nothing", server.url("/no/such/nothing.tar.gz"))
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(spec)
    assert server.count() == 1
    assert assert_cache_whole(isolated_env) == []


def test_mirrors_tried_in_order_and_first_good_one_wins(root, ssd, monkeypatch, tmp_path):
    with FaultyServer(root) as a, FaultyServer(root) as b:
        monkeypatch.setenv("ODZOO_MIRROR", f"{a.base},{b.base}")
        fetch(spec_of(ssd))
        assert a.count() == 1 and b.count() == 0


def test_mirror_serving_wrong_bytes_is_skipped(root, ssd, monkeypatch, isolated_env):
    with FaultyServer(root) as bad, FaultyServer(root) as good:
        bad.add_fault("corrupt", at=10, times=10)
        monkeypatch.setenv("ODZOO_MIRROR", f"{bad.base},{good.base}")
        fetch(spec_of(ssd))
        assert bad.count() == 2 and good.count() == 1  # one clean restart: it may be damage
        assert_cache_whole(isolated_env)


def test_mirror_vouching_for_other_bytes_is_skipped_at_once(ssd, zoo, tmp_path, monkeypatch,
                                                             isolated_env, root):
    other = next(z for z in zoo.values() if z.name != SSD)
    evil_root = tmp_path / "evil"
    (evil_root / ssd.url_path.lstrip("/")).parent.mkdir(parents=True)
    shutil.copy(other.path, evil_root / ssd.url_path.lstrip("/"))
    with FaultyServer(evil_root) as evil, FaultyServer(root) as good:
        evil.md5 = "goog"  # its md5 matches what it sends: not damage, other bytes
        monkeypatch.setenv("ODZOO_MIRROR", f"{evil.base},{good.base}")
        fetch(spec_of(ssd))
        assert evil.count() == 1 and good.count() == 1
    assert read_manifest(isolated_env / "models" / SSD).archive_sha256 == ssd.sha256


def test_dead_mirror_falls_through_to_next(root, ssd, monkeypatch, isolated_env):
    with FaultyServer(root) as good:
        monkeypatch.setenv("ODZOO_RETRIES", "1")
        monkeypatch.setenv("ODZOO_MIRROR", f"http://127.0.0.1:9/,{good.base}")
        fetch(spec_of(ssd))
        assert good.count() == 1
    assert_cache_whole(isolated_env)


def test_mirror_with_prefix_and_file_mirror(root, ssd, monkeypatch, tmp_path, isolated_env):
    prefixed = tmp_path / "srv"
    (prefixed / "zoo").mkdir(parents=True)
    (prefixed / "zoo" / "models").symlink_to(root / "models")
    with FaultyServer(prefixed) as srv:
        monkeypatch.setenv("ODZOO_MIRROR", f"{srv.base}/zoo/")
        fetch(spec_of(ssd))
        assert srv.requests[0].path == "/zoo" + ssd.url_path
    shutil.rmtree(isolated_env / "models")
    monkeypatch.setenv("ODZOO_MIRROR", root.as_uri())
    monkeypatch.setenv("ODZOO_OFFLINE", "1")  # file:// mirrors are allowed offline
    assert (fetch(spec_of(ssd)) / "pipeline.config").is_file()


def test_bad_mirror_setting_is_reported(monkeypatch, ssd):
    monkeypatch.setenv("ODZOO_MIRROR", "ftp://example.org")
    with pytest.raises(DownloadError, match="ODZOO_MIRROR"):
        fetch(spec_of(ssd))


def test_offline_serves_cache_with_zero_requests(server, ssd, monkeypatch):
    monkeypatch.setenv("ODZOO_MIRROR", server.base)
    path = fetch(spec_of(ssd))
    server.reset()
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    assert fetch(spec_of(ssd)) == path
    assert server.count() == 0


def test_offline_without_cache_raises_and_says_what_to_do(server, ssd, monkeypatch, isolated_env):
    monkeypatch.setenv("ODZOO_MIRROR", server.base)
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    with pytest.raises(OfflineError) as info:
        fetch(spec_of(ssd))
    text = str(info.value)
    assert SSD in text and "odzoo download" in text and "odzoo import" in text
    assert server.count() == 0
    with pytest.raises(OfflineError):
        fetch(spec_of(ssd), offline=True)


def test_trust_on_first_use_records_and_enforces(ssd, zoo, isolated_env, tmp_path, monkeypatch,
                                                 tls_pair):
    site = tmp_path / "site"
    target = site / ssd.url_path.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy(ssd.path, target)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_pair[0])
    with FaultyServer(site, tls=tls_pair) as srv:
        spec = Spec(SSD, srv.url(ssd.url_path))  # no registry digest
        first = fetch(spec)
        digests = json.loads((isolated_env / "digests.json").read_text())
        assert digests[spec.url]["sha256"] == ssd.sha256
        assert digests[spec.url]["size"] == ssd.size
        # the file at that URL changes: later downloads must match the first one
        other = next(z for z in zoo.values() if z.name != SSD)
        shutil.copy(other.path, target)
        with pytest.raises(IntegrityError) as info:
            fetch(spec, force=True)
        assert ssd.sha256 in str(info.value)
        # the entry from the first download is still there, whole
        assert read_manifest(first).archive_sha256 == ssd.sha256
        assert assert_cache_whole(isolated_env) == [SSD]
        # a mirror serving the changed file is skipped in favour of a source with trusted bytes
        shutil.copy(ssd.path, target)
        evil_root = tmp_path / "evil"
        (evil_root / target.relative_to(site)).parent.mkdir(parents=True)
        shutil.copy(other.path, evil_root / target.relative_to(site))
        with FaultyServer(evil_root) as evil:
            evil.md5 = "goog"
            monkeypatch.setenv("ODZOO_MIRROR", evil.base)
            fetch(spec, force=True)
            assert evil.count() == 1
        assert read_manifest(first).archive_sha256 == ssd.sha256


def test_digest_seen_over_plain_http_is_not_pinned(ssd, zoo, isolated_env, tmp_path):
    site = tmp_path / "site"
    target = site / ssd.url_path.lstrip("/")
    target.parent.mkdir(parents=True)
    shutil.copy(ssd.path, target)
    with FaultyServer(site) as srv:
        spec = Spec(SSD, srv.url(ssd.url_path))
        fetch(spec)
        record = json.loads((isolated_env / "digests.json").read_text())[spec.url]
        assert record["sha256"] == ssd.sha256 and record["trusted"] is False
        other = next(z for z in zoo.values() if z.name != SSD)
        shutil.copy(other.path, target)  # anyone on the path could have sent these bytes
        path = fetch(spec, force=True)
        assert read_manifest(path).archive_sha256 == other.sha256
        assert assert_cache_whole(isolated_env) == [SSD]


def test_registry_spec_through_mirror(server, monkeypatch, isolated_env):
    from zoo import registry
    monkeypatch.setenv("ODZOO_MIRROR", server.base)
    spec = registry.get("ssd_mobilenet_v2_fpnlite_320")
    path = fetch(spec)
    assert path.name == spec.name and (path / "checkpoint" / "ckpt-0.index").is_file()
    assert server.requests[0].path.endswith(f"/{spec.name}.tar.gz")
    assert fetch("ssd_mobilenet_v2_fpnlite_320") == path  # by alias, from the cache
    assert server.count() == 1


def test_folder_and_local_archive_sources(ssd, tmp_path, isolated_env):
    path = fetch(ssd.path)  # a local .tar.gz
    assert path == isolated_env / "models" / SSD
    assert fetch(path) == path  # a model folder is returned as is
    from zoo.errors import ConfigError, NotCachedError

    with pytest.raises(ConfigError):
        fetch(tmp_path)
    with pytest.raises(NotCachedError):
        fetch(tmp_path / "missing.tar.gz")


def test_http_proxy_from_the_environment_is_used(server, ssd, monkeypatch, isolated_env):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.base)  # the test server doubles as a forward proxy
    fetch(spec_of(ssd))  # the real zoo URL, reached only through the proxy
    assert server.count() == 1 and server.requests[0].path == ssd.url_path
    assert_cache_whole(isolated_env)


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory):
    return self_signed(tmp_path_factory.mktemp("tls"))


def test_https_verifies_and_honours_the_ca_bundle_setting(root, ssd, tls_pair, monkeypatch, isolated_env):
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    with FaultyServer(root, tls=tls_pair) as srv:
        spec = Spec(ssd.name, srv.url(ssd.url_path), ssd.sha256, ssd.size, ssd.archive_top)
        with pytest.raises(DownloadError, match="REQUESTS_CA_BUNDLE") as info:
            fetch(spec)  # self-signed: refused, and not retried
        assert "gave up after" not in str(info.value)
        assert assert_cache_whole(isolated_env) == []
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls_pair[0])
        assert (fetch(spec) / "pipeline.config").is_file()
        assert srv.count() == 1
