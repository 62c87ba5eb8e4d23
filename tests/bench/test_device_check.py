"""``benchmarks/device_check.sh --dry-run``: the accelerator check runs end to end on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_device_check_dry_run_writes_a_complete_report(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device_check.sh"), "--dry-run", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["dry_run"] and report["devices"] == ["CPU only"]
    rows = report["rows"]
    settings = {(r["backend"], r["jit_compile"], r["precision"]) for r in rows}
    assert settings == {("keras", False, "float32"), ("keras", False, "float16"), ("keras", True, "float32"),
                        ("saved_model", False, "float32")}
    for row in rows:
        assert "error" not in row and row["batch1_ms"] > 0 and row["first_call_s"] > 0
        assert row["agreement_with_keras_float32"]["matched"] >= 0.9
    keras_plain = next(r for r in rows if r["backend"] == "keras" and not r["jit_compile"] and r["precision"] == "float32")
    assert keras_plain["batch2_images_per_s"] > 0
    assert "| demo_shapes | saved_model |" in (tmp_path / "device_check.md").read_text()
