"""Hub test fixtures: a stand-in zoo served over HTTP on 127.0.0.1.

``zoo`` is the mirror folder (built once per session from ../shared); ``server`` serves it with
switchable faults; ``mirror`` also points ``ODZOO_MIRROR`` at it, so registry names download from it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent))

from http_fixture import FaultyServer  # noqa: E402
from tarball_fixture import SSD, ZooFile, zoo_mirror  # noqa: E402


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "zoo-mirror"


@pytest.fixture(scope="session")
def zoo(zoo_root: Path) -> dict[str, ZooFile]:
    return zoo_mirror(zoo_root)


@pytest.fixture
def server(zoo: dict[str, ZooFile], zoo_root: Path):
    with FaultyServer(zoo_root / "root") as srv:
        yield srv


@pytest.fixture
def mirror(server: FaultyServer, monkeypatch: pytest.MonkeyPatch) -> FaultyServer:
    monkeypatch.setenv("ODZOO_MIRROR", server.base)
    return server


@pytest.fixture
def ssd(zoo: dict[str, ZooFile]) -> ZooFile:
    return zoo[SSD]
