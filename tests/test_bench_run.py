"""The benchmark harness end to end on CPU with tiny detectors, and its measuring parts."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_bench_detector import ColourDetector, TruthDetector
from zoo.bench import BenchOptions, run
from zoo.bench import latency as lat
from zoo.bench.distributed import DeviceError, parse_device, worker_info
from zoo.bench.memory import MemoryProbe, current_rss_bytes, peak_rss_bytes
from zoo.bench.report import TABLE_HEADER, pareto_front
from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.eval import evaluate

FAST = BenchOptions(iterations=3, min_duration_s=0.0, warmup=1, batch=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> CocoDataset:
    root = make_shapes_dataset(tmp_path_factory.mktemp("run_shapes"), 6, seed=9, image_size=(96, 128), max_objects=3)
    return CocoDataset(root / "annotations.json", root / "images")


@pytest.fixture(scope="module")
def bench_doc(dataset: CocoDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench_out")
    doc = run([ColourDetector(), TruthDetector(dataset)], dataset=dataset, options=FAST, out_dir=out)
    return doc, out


def test_run_end_to_end_records(bench_doc: tuple[dict, Path], dataset: CocoDataset) -> None:
    doc, _ = bench_doc
    colour, truth = doc["models"]
    assert truth["model"] == "tiny_truth" and truth["accuracy"]["bbox"]["stats"]["AP"] == 1.0
    assert truth["summary"]["box_map"] == 100.0 and truth["summary"]["box_map_delta"] == 0.0
    # the colour detector's statistics are exactly what the evaluator gives on its own detections
    from zoo.bench.run import detect_dataset

    direct = evaluate(dataset, detect_dataset(ColourDetector(), dataset), evaluator="pycocotools")
    assert colour["accuracy"]["bbox"]["stats"] == direct.stats
    assert colour["accuracy"]["bbox"]["stats"]["AP"] > 0.5
    assert colour["latency"]["iterations"] >= 3 and colour["latency"]["warmup"] == 1
    assert set(colour["latency"]["stages_p50_ms"]) == {"preprocess", "inference", "postprocess"}
    assert colour["throughput"]["batch"] == 2 and colour["throughput"]["images_per_s"] > 0
    assert colour["times"]["first_call_s"] > 0
    assert colour["memory"]["inference"]["rss_peak_bytes"] > 0
    proto = colour["protocol"]
    assert proto["image_count"] == 6 and proto["category_mapping"] == "name"
    assert proto["max_detections"] == 100 and proto["score_threshold"] == 0.0
    assert proto["evaluator"] in ("pycocotools", "faster_coco_eval") and proto["evaluator_version"]
    env = doc["env"]
    assert env["versions"]["tensorflow"] and env["versions"]["keras"] and env["versions"]["numpy"]
    assert env["cpu"]["cores"] >= 1 and env["python"]
    assert "precision" in env["tensorflow"]


def test_report_files_parse(bench_doc: tuple[dict, Path]) -> None:
    doc, out = bench_doc
    assert json.loads((out / "results.json").read_text())["models"][1]["model"] == "tiny_truth"
    md = (out / "report.md").read_text()
    assert TABLE_HEADER in md
    rows = [line for line in md.splitlines() if line.startswith("| tiny_")]
    assert len(rows) == 2
    truth_row = next(r for r in rows if r.startswith("| tiny_truth"))
    cells = [c.strip() for c in truth_row.strip("|").split("|")]
    assert cells[2:5] == ["100.0", "100.0", "+0.0"]
    with Image.open(out / "speed_accuracy.png") as img:
        assert img.format == "PNG" and img.size[0] > 200


def test_max_images_and_failures_are_recorded(dataset: CocoDataset, tmp_path: Path) -> None:
    class Broken(ColourDetector):
        def detect(self, images, **kwargs):
            from zoo.errors import InputError

            raise InputError("cannot read this image")

    doc = run([TruthDetector(dataset), Broken("tiny_broken")], dataset=dataset,
              options=BenchOptions(iterations=2, min_duration_s=0.0, warmup=0, max_images=2, latency=False))
    ok, broken = doc["models"]
    assert ok["accuracy"]["bbox"]["num_images"] == 2 and ok["latency"] is None
    assert broken == {"model": "tiny_broken", "error": "InputError: cannot read this image"}
    assert doc["protocol"]["image_count"] == 2


def test_latency_loop_honours_minimums() -> None:
    ticks = itertools.count(0.0, 0.25)  # a fake clock: every reading advances 0.25 s
    calls = []
    stats = lat.measure(lambda: calls.append(1), warmup=2, min_iterations=3, min_duration_s=2.0,
                        clock=lambda: next(ticks))
    # each timed call reads the clock twice (0.25 s per call) plus once for the duration check
    assert stats.iterations >= 3 and stats.total_s >= 0.25 * stats.iterations - 1e-9
    assert len(calls) == stats.iterations + 2
    assert stats.p50_ms == pytest.approx(250.0)
    ticks = itertools.count(0.0, 0.25)
    capped = lat.measure(lambda: None, warmup=0, min_iterations=1, min_duration_s=1e9, max_iterations=5,
                         clock=lambda: next(ticks))
    assert capped.iterations == 5


def test_latency_summary_percentiles() -> None:
    samples = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    stats = lat.summarize(samples, stages={"inference_s": samples})
    assert stats.p50_ms == pytest.approx(np.percentile(np.arange(1, 101), 50))
    assert stats.p90_ms == pytest.approx(np.percentile(np.arange(1, 101), 90))
    assert stats.p99_ms == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(100.0)
    assert lat.throughput(4, lat.summarize([0.5])) == pytest.approx(8.0)


def test_pareto_front() -> None:
    pts = [(10.0, 30.0), (20.0, 25.0), (30.0, 40.0), (5.0, 20.0), (40.0, 39.0), (30.0, 35.0)]
    assert pareto_front(pts) == [3, 0, 2]


def test_memory_probe() -> None:
    assert current_rss_bytes() > 0 and peak_rss_bytes() >= current_rss_bytes() // 2
    with MemoryProbe("CPU:0") as probe:
        block = np.ones(16 * 1024 * 1024, np.uint8)  # 16 MiB touched
        block[::4096] = 2
    assert probe.result["rss_peak_bytes"] >= probe.result["rss_before_bytes"]
    assert probe.result["accelerator"] is None


def test_devices_and_tf_config() -> None:
    assert parse_device("cpu") == ("CPU", 0) and parse_device("gpu:1") == ("GPU", 1)
    assert parse_device("GPU") == ("GPU", None) and parse_device("tpu") == ("TPU", None)
    with pytest.raises(DeviceError, match="unknown device"):
        parse_device("npu")
    cfg = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}})
    info = worker_info(cfg)
    assert (info.index, info.count, info.is_chief) == (1, 2, False)
    with pytest.raises(DeviceError, match="TF_CONFIG"):
        worker_info("{not json")
    assert worker_info("") is None
