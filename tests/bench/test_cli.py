"""``odzoo eval`` and ``odzoo bench``: output, exit codes, one-line errors, and ``--compare``."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.bench.test_detector import ColourDetector
from tests.conftest import FIXTURES
from zoo.bench import BenchOptions, run
from zoo.bench.compare import compare, has_regression
from zoo.cli import main
from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.eval import BOX_STAT_NAMES


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("cli_shapes"), 4, seed=2, image_size=64)


def _gt_dets(shapes: Path, tmp_path: Path) -> Path:
    data = json.loads((shapes / "annotations.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in data["annotations"]]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    return path


def _one_line_error(capsys: pytest.CaptureFixture, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err


def test_eval_prints_the_twelve_statistics(shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dets = _gt_dets(shapes, tmp_path)
    assert main(["eval", "--annotations", str(shapes / "annotations.json"), "--detections", str(dets)]) == 0
    out = capsys.readouterr().out.splitlines()
    stats = [line.split() for line in out[1:]]
    assert [s[0] for s in stats] == list(BOX_STAT_NAMES)
    assert stats[0][1] == "1.0000"
    assert main(["eval", "--annotations", str(shapes / "annotations.json"), "--detections", str(dets),
                 "--evaluator", "pycocotools", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["evaluator"] == "pycocotools" and doc["stats"]["AP"] == 1.0 and len(doc["stats"]) == 12


def test_cli_errors_are_one_line(shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = str(shapes / "annotations.json")
    _one_line_error(capsys, ["eval", "--annotations", gt, "--detections", str(tmp_path / "none.json")], "not found")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    _one_line_error(capsys, ["eval", "--annotations", gt, "--detections", str(bad)], "not valid JSON")
    _one_line_error(capsys, ["eval", "--annotations", str(bad), "--detections", str(bad)], "not valid JSON")
    _one_line_error(capsys, ["bench"], "name at least one model")
    _one_line_error(capsys, ["bench", "x", "--device", "npu:0"], "unknown device")
    _one_line_error(capsys, ["bench", "--compare", str(bad), str(bad)], "not valid JSON")
    _one_line_error(capsys, ["bench", "x", "--annotations", gt], "--annotations and --images go together")
    _one_line_error(capsys, ["bench", "x", "--iterations", "0"], "--iterations: '0': must be at least 1")


def test_bench_unknown_model_is_one_line(capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, ["bench", "no_such_model_anywhere", "--no-latency"], "no_such_model_anywhere")


def test_tpu_fails_clearly_without_a_tpu(capsys: pytest.CaptureFixture) -> None:
    _one_line_error(capsys, ["bench", "anything", "--device", "tpu"], "no TPU found")


@pytest.fixture(scope="module")
def results_json(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = CocoDataset(shapes / "annotations.json", shapes / "images")
    out = tmp_path_factory.mktemp("cmp")
    run([ColourDetector()], dataset=ds, options=BenchOptions(iterations=2, min_duration_s=0.0, warmup=0),
        out_dir=out, formats=("json",))
    return out / "results.json"


def _inject(doc: dict, *, ap_factor: float = 1.0, latency_factor: float = 1.0) -> dict:
    new = copy.deepcopy(doc)
    rec = new["models"][0]
    rec["accuracy"]["bbox"]["stats"]["AP"] *= ap_factor
    rec["latency"]["p50_ms"] *= latency_factor
    return new


def test_compare_flags_injected_regressions(results_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    old = json.loads(results_json.read_text())
    assert not has_regression(compare(old, old))
    slower = compare(old, _inject(old, latency_factor=1.2), tolerance=0.05)
    assert [f.metric for f in slower if f.regression] == ["p50 ms"]
    worse = compare(old, _inject(old, ap_factor=0.9), tolerance=0.05)
    assert [f.metric for f in worse if f.regression] == ["box AP"]
    assert not has_regression(compare(old, _inject(old, ap_factor=0.97, latency_factor=1.04), tolerance=0.05))
    failed = copy.deepcopy(old)
    failed["models"][0] = {"model": old["models"][0]["model"], "device": "cpu", "error": "LoadError: gone"}
    assert has_regression(compare(old, failed))

    new_path = tmp_path / "new.json"
    new_path.write_text(json.dumps(_inject(old, latency_factor=1.5)))
    assert main(["bench", "--compare", str(results_json), str(new_path), "--tolerance", "0.05"]) == 1
    captured = capsys.readouterr()
    assert "REGRESSION" in captured.out and "p50 ms" in captured.out
    assert main(["bench", "--compare", str(results_json), str(new_path), "--tolerance", "0.6"]) == 0
    capsys.readouterr()
    assert main(["bench", "--compare", str(results_json), str(results_json), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and not any(r["regression"] for r in rows)


def test_bench_cli_with_a_zoo_model(shapes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A stand-in zoo archive through zoo.download + zoo.load (saved_model backend), on CPU."""
    data = json.loads((shapes / "annotations.json").read_text())
    data["categories"] = [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}]
    gt = tmp_path / "coco_named.json"
    gt.write_text(json.dumps(data))
    archive = FIXTURES / "tarballs" / "centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz"
    out = tmp_path / "report"
    rc = main(["bench", str(archive), "--backend", "saved_model", "--annotations", str(gt), "--images",
               str(shapes / "images"), "--max-images", "2", "--iterations", "2", "--warmup", "0",
               "--min-duration", "0", "--out", str(out), "--json"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    (rec,) = doc["models"]
    assert rec["model"] == "centernet_mobilenetv2fpn_512x512_coco17_od" and rec["backend"] == "saved_model"
    assert rec["times"]["download_s"] > 0 and rec["times"]["load_s"] > 0 and rec["times"]["first_call_s"] > 0
    assert set(rec["latency"]["stages_p50_ms"]) == {"preprocess", "inference", "postprocess"}
    assert rec["protocol"]["category_mapping"] == "id" and rec["protocol"]["image_count"] == 2
    assert len(rec["accuracy"]["bbox"]["stats"]) == 12
    assert json.loads((out / "results.json").read_text())["models"][0]["model"] == rec["model"]
