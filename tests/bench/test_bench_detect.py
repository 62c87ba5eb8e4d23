"""``benchmarks/bench_detect.py --families``: argument checking (before any model work) and its table."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_detect.py"


@pytest.fixture(scope="module")
def bench_detect():
    spec = importlib.util.spec_from_file_location("bench_detect", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("argv, message", [
    (["--families", "retinanet", "yolo"], "--families: unknown family yolo; choose from centernet"),
    (["--families", "--family-timeout-s", "0"], "--family-timeout-s must be > 0"),
    (["--work", "somewhere"], "--work applies only with --families"),
    (["--families", "--repeats", "0"], "--repeats and --cold-runs must be >= 1"),
])
def test_bad_family_arguments_exit_2_with_one_line(bench_detect, capsys, tmp_path, argv, message):
    out = tmp_path / "never.json"
    with pytest.raises(SystemExit) as exit_info:
        bench_detect.main([*argv, "--out", str(out)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_work_that_is_a_file_is_refused(bench_detect, capsys, tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        bench_detect.main(["--families", "ssd", "--work", str(not_a_folder)])
    assert exit_info.value.code == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_family_names_default_and_deduplicate(bench_detect):
    assert bench_detect.parse_families([]) == ("efficientdet", "retinanet", "faster_rcnn", "mask_rcnn")
    assert bench_detect.parse_families(["ssd", "faster_rcnn", "ssd"]) == ("ssd", "faster_rcnn")
    assert set(bench_detect.FAMILIES) >= {"centernet", "ssd", "efficientdet", "retinanet", "faster_rcnn", "mask_rcnn"}


def test_families_table_shows_goals_and_skip_reasons(bench_detect):
    measured = {
        "model": "m1",
        "cold_start": {"keras": {"median_cold_start_s": 1.0}, "saved_model": {"median_cold_start_s": 5.0},
                       "keras_first_process": {"median_cold_start_s": 4.0}},
        "steady": {"keras": {"median_s": 0.07}, "saved_model": {"median_s": 0.1}},
        "ratios": {"cold_start_keras_over_saved_model": 0.2, "steady_keras_over_saved_model": 0.7,
                   "cold_start_keras_first_process_over_saved_model": 0.8},
        "goals_met": {"cold_start": True, "steady": False},
    }
    rows = bench_detect.families_table({"ssd": measured, "mask_rcnn": {"model": "m2", "skipped": "too slow"}})
    cold = next(r for r in rows if r.startswith("| ssd (m1) | cold start:"))
    first = next(r for r in rows if r.startswith("| ssd (m1) | cold start, first process"))
    steady = next(r for r in rows if r.startswith("| ssd (m1) | steady"))
    assert "0.20x | <= 0.25x | yes |" in cold
    assert "| 4.00 s | | 0.80x |" in first
    assert "70.0 ms | 100.0 ms | 0.70x | <= 0.6x | no |" in steady
    assert any(r.startswith("| mask_rcnn (m2) | skipped | too slow") for r in rows)
