"""``odzoo bench`` compares backends of one model: one row per model and backend, with the size on
disk next to latency, load time and mAP, an exported model next to the model it came from."""
from __future__ import annotations

from pathlib import Path

import pytest

from zoo.bench.report import markdown, side_by_side


def _record(model: str, backend: str, size: int | None = None, source: str | None = None, p50: float = 10.0) -> dict:
    return {"model": model, "backend": backend, "size_bytes": size, "source_model": source, "device": "cpu",
            "latency": {"p50_ms": p50, "p90_ms": p50}, "times": {"load_s": 0.5}, "summary": {}, "published": {}}


def test_rows_of_one_model_stand_together_in_backend_order() -> None:
    records = [
        _record("ssd", "tflite", 2 << 20, p50=4.0),
        _record("centernet", "keras", 9 << 20),
        _record("ssd_lite", "tflite", 1 << 20, source="ssd"),
        _record("ssd", "keras", 5 << 20),
        {"model": "ssd", "backend": "saved_model", "error": "NotCachedError: no SavedModel"},
    ]
    ordered = side_by_side(records)
    assert [(r["model"], r["backend"]) for r in ordered] == [
        ("ssd", "keras"), ("ssd", "saved_model"), ("ssd", "tflite"), ("ssd_lite", "tflite"), ("centernet", "keras")]
    rows = [line for line in markdown({"models": records}).splitlines() if line.startswith("| ssd")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[:3] for c in cells] == [["ssd", "keras", "5.0"], ["ssd", "saved_model", "failed: NotCachedError: no SavedModel"],
                                      ["ssd", "tflite", "2.0"], ["ssd_lite (from ssd)", "tflite", "1.0"]]
    assert cells[2][8] == "4.00" and cells[0][8] == "10.00"  # p50 ms of each backend


@pytest.mark.slow
def test_a_model_and_its_tflite_export_are_benchmarked_side_by_side(tmp_path: Path) -> None:
    import zoo
    from zoo.bench import BenchOptions, run

    exported = zoo.export("demo_shapes", "tflite", out=tmp_path / "demo_lite")
    assert zoo.load(exported.folder).backend == "tflite"  # zoo.load picks the backend of an export itself
    # every chosen backend for the model; the export runs on the one backend that can run it
    options = BenchOptions(iterations=2, min_duration_s=0.0, warmup=1, backends=("keras", "saved_model"))
    doc = run([str(exported.folder), "demo_shapes"], options=options, out_dir=tmp_path / "report")
    lite, keras, served = doc["models"]
    assert (lite["backend"], keras["backend"], served["backend"]) == ("tflite", "keras", "saved_model")
    assert served["size_bytes"] > 0 and "error" not in served
    assert lite["source_model"] == "demo_shapes" and lite["size_bytes"] == (exported.folder / "model.tflite").stat().st_size
    assert keras["size_bytes"] > 0 and keras["times"]["load_s"] > 0 and lite["times"]["load_s"] > 0
    table = (tmp_path / "report" / "report.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith(("| demo_shapes", "| demo_lite"))]
    assert rows[0].startswith("| demo_shapes | keras |") and rows[1].startswith("| demo_shapes | saved_model |")
    assert rows[2].startswith("| demo_lite (from demo_shapes) | tflite |")


def test_backend_list_is_checked_before_any_model_loads(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    for value, fragment in (("keras,torch", "--backend 'torch' is not one of"), (",", "names no backend")):
        assert main(["bench", "no_such_model", "--backend", value]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err
