"""Shared test fixtures: every test runs against an empty, private cache and a clean environment."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# test modules may write either `from .conftest import X` or `from conftest import X`
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = (ROOT / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
MANIFESTS = SHARED / "manifests"
CONFIGS = SHARED / "configs"
REFERENCE = SHARED / "reference"
TOOLS = SHARED / "tools"
INPUT_IMAGE = FIXTURES / "inputs" / "A.png"

_ENV = (
    "ODZOO_CACHE", "ODZOO_MIRROR", "ODZOO_OFFLINE", "ODZOO_REGISTRY", "ODZOO_QUIET",
    "ODZOO_TIMEOUT", "ODZOO_RETRIES", "ODZOO_KEEP_ARCHIVES", "ODZOO_TRACE_CACHE",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder per test; no mirror, offline flag or private registry leaks in."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ODZOO_CACHE", str(cache))
    monkeypatch.setenv("ODZOO_QUIET", "1")
    return cache


@pytest.fixture(autouse=True, scope="module")
def release_memory_after_module():
    """Free what a test module's models held before the next module builds its own.

    Big detectors (Hourglass-104 and Inception-ResNet-V2 at 1024x1024) need gigabytes of activations;
    clearing Keras' global state and handing freed heap back to the OS keeps the whole suite's
    peak memory close to the largest single model's instead of their sum.
    """
    yield
    import gc

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def pytest_sessionstart(session: pytest.Session) -> None:
    """The suite checks odzoo against ../shared (zoo manifests, configs, reference outputs): say so plainly."""
    if not (SHARED / "README.md").is_file():
        raise pytest.UsageError(
            f"the tests need the folder {SHARED} (zoo manifests, configs and reference outputs) beside the "
            "repository; see README.md, 'Set up'"
        )
