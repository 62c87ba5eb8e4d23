"""The embedded demo detector and ``odzoo demo``, fully offline."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "zoo" / "assets"


def test_packaged_demo_model_matches_its_facts():
    facts = json.loads((ASSETS / "demo_shapes.json").read_text())
    archive = ASSETS / facts["file"]
    data = archive.read_bytes()
    assert hashlib.sha256(data).hexdigest() == facts["sha256"]
    assert len(data) == facts["size_bytes"] < 10 * 1024 * 1024
    assert facts["label_map"] == {"1": "circle", "2": "square", "3": "triangle"}
    assert facts["heldout_metrics"]["AP"] > 0.3  # a real detector, not a placeholder
    from zoo.registry import registry

    if "demo_shapes" in registry():  # the registry entry points at this very file
        spec = registry().get("demo_shapes")
        assert spec.sha256 in (None, facts["sha256"])
        assert spec.num_classes == 3 and dict(spec.label_map) == {1: "circle", 2: "square", 3: "triangle"}


def test_odzoo_demo_runs_offline_and_writes_its_outputs(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    monkeypatch.delenv("ODZOO_MIRROR", raising=False)
    extra = tmp_path / "mine.png"
    from PIL import Image

    from zoo.datasets.synthetic import make_shapes_dataset

    sample = make_shapes_dataset(tmp_path / "one", 1, seed=99, image_size=(200, 300))
    Image.open(sample / "images" / "000001.png").save(extra)
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--images", "8", "--image", str(extra)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "mAP@[.5:.95]" in text and str(out) in text
    for name in ("bench/detections-demo_shapes.json", "metrics.json", "annotated.png", "annotated_mine.png",
                 "bench/report.md", "bench/results.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 8
    assert metrics["stats"]["AP50"] > 0.5  # the embedded detector finds the shapes
    bench = json.loads((out / "bench" / "results.json").read_text())
    record = bench["models"][0]
    assert "error" not in record
    assert record["times"]["load_s"] > 0 and record["times"]["first_call_s"] > 0  # measured, not skipped
    results = json.loads((out / "bench" / "detections-demo_shapes.json").read_text())
    assert {r["image_id"] for r in results} <= set(range(1, 9)) and len(results) == record["num_results"]
    drawn = Image.open(out / "annotated.png")
    assert drawn.size == (256, 256)
    original = Image.open(out / "heldout" / "images" / "000001.png")
    assert list(drawn.getdata()) != list(original.getdata())  # boxes were drawn


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    from zoo.cli import main

    assert main(["demo", "--out", str(tmp_path), "--images", "0"]) == 2
    assert "--images" in capsys.readouterr().err
