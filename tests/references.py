"""Comparing our outputs with the original implementation's reference arrays (``fixtures/NAME/reference.npz``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from .conftest import FIXTURES, MANIFESTS, TOOLS


def write_reference_checkpoint(name: str, folder: str | Path) -> Path:
    """The checkpoint the references were computed with: the manifest's keys, seed 0, the fixture's overrides."""
    subprocess.run(
        [sys.executable, str(TOOLS / "synth_checkpoint.py"), str(MANIFESTS / f"{name}.json"), str(folder),
         "--seed", "0", "--overrides", str(FIXTURES / name / "overrides.npz")],
        check=True, capture_output=True,
    )
    return Path(folder)


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    """Relative L2 distance ``|got - want| / |want|`` in float64."""
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-12))


def check_reference(ref: dict[str, np.ndarray], key: str, got: np.ndarray, tol: float = 1e-4) -> None:
    """Assert ``got`` matches reference ``key`` within ``tol`` relative L2.

    Large arrays are stored as a sample (``__sample_idx`` / ``__sample_val``) plus exact ``__sum`` and
    ``__sumsq``: the sample must match within ``tol`` and the norm and sum within the same tolerance.
    """
    got = np.asarray(got)
    if key in ref:
        assert got.shape == ref[key].shape, key
        assert rel_l2(got, ref[key]) < tol, f"{key}: relative L2 {rel_l2(got, ref[key]):.2e}"
        return
    assert tuple(ref[f"{key}__shape"]) == got.shape, key
    sample = got.ravel()[ref[f"{key}__sample_idx"]]
    error = rel_l2(sample, ref[f"{key}__sample_val"])
    assert error < tol, f"{key}: sample relative L2 {error:.2e}"
    norm = np.sqrt(float(ref[f"{key}__sumsq"]))
    assert abs(np.linalg.norm(got.astype(np.float64)) - norm) <= tol * norm, key
    assert abs(got.astype(np.float64).sum() - float(ref[f"{key}__sum"])) <= tol * np.sqrt(got.size) * norm, key
