"""Fixtures of the model tests: reference checkpoints written once per session."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.references import write_reference_checkpoint


@pytest.fixture(scope="session")
def reference_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """name -> the folder of its reference checkpoint (seed 0, the fixture's overrides), written on first use."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = write_reference_checkpoint(name, tmp_path_factory.mktemp(name))
        return made[name]

    return get
