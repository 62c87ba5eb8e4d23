"""The benchmark harness end to end on CPU with tiny detectors, and its measuring parts."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bench.test_detector import ColourDetector, TruthDetector
from zoo.bench import BenchOptions, run
from zoo.bench import latency as lat
from zoo.bench.distributed import parse_device, worker_info
from zoo.bench.memory import MemoryProbe, current_rss_bytes, peak_rss_bytes
from zoo.bench.report import TABLE_HEADER, markdown, pareto_front
from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.errors import DeviceError
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
    assert cells[1] == "numpy" and cells[2] == "–"  # the backend named, nothing loaded from disk
    assert cells[4:7] == ["100.0", "100.0", "+0.0"]
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
    assert broken == {"model": "tiny_broken", "backend": "numpy", "error": "InputError: cannot read this image"}
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


def _pose_dataset(root: Path) -> CocoDataset:
    """The shapes images relabelled as people, each with 17 keypoints inside its box."""
    from zoo.labels import PERSON_KEYPOINTS

    make_shapes_dataset(root, 4, seed=13, image_size=(80, 96), max_objects=2)
    data = json.loads((root / "annotations.json").read_text())
    rng = np.random.default_rng(0)
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        pts = np.stack([x + rng.uniform(0, w, 17), y + rng.uniform(0, h, 17), np.full(17, 2.0)], 1)
        ann.update(category_id=1, keypoints=pts.reshape(-1).tolist(), num_keypoints=17)
    data["categories"] = [{"id": 1, "name": "person", "keypoints": list(PERSON_KEYPOINTS), "skeleton": []}]
    (root / "pose.json").write_text(json.dumps(data))
    return CocoDataset(root / "pose.json", root / "images")


class PoseMaskTruth(TruthDetector):
    """Ground-truth people with jittered keypoints and masks drawn from the polygons."""

    def __init__(self, dataset: CocoDataset) -> None:
        super().__init__(dataset, name="tiny_pose")
        import dataclasses as dc

        self.spec = dc.replace(self.spec, label_map={1: "person"}, outputs=("boxes", "keypoints", "masks"))

    def detect(self, images, *, score_threshold=0.0, max_detections=None):
        from PIL import ImageDraw

        from tests.bench.test_detector import image_key
        from zoo.detections import Detections

        if isinstance(images, list):
            return [self.detect(i, score_threshold=score_threshold, max_detections=max_detections) for i in images]
        h, w = images.shape[:2]
        image_id, anns = self._truth[image_key(images)]
        boxes, kps, masks = [], [], []
        for k, a in enumerate(anns):
            x, y, bw, bh = a["bbox"]
            boxes.append([y / h, x / w, (y + bh) / h, (x + bw) / w])
            pts = np.asarray(a["keypoints"], np.float32).reshape(17, 3)[:, :2] + 1.5 * (k + image_id % 2)
            kps.append(np.stack([pts[:, 1] / h, pts[:, 0] / w], 1))
            canvas = Image.new("L", (w, h), 0)
            ImageDraw.Draw(canvas).polygon(a["segmentation"][0], fill=255)
            mask = np.asarray(canvas, np.float32) / 255.0
            if k % 2:
                mask[: int(y + bh / 2)] = 0.0  # half a mask for every second person
            masks.append(mask)
        n = len(anns)
        return Detections.from_normalized(
            np.asarray(boxes, np.float32).reshape(-1, 4), np.linspace(0.9, 0.5, n), np.ones(n, np.int64), (h, w),
            label_map={1: "person"}, keypoints_normalized=np.asarray(kps, np.float32).reshape(n, 17, 2),
            keypoint_scores=np.ones((n, 17), np.float32), masks=np.asarray(masks, np.float32).reshape(n, h, w),
        ).filter(score_threshold, max_detections)


def test_keypoint_and_mask_statistics(tmp_path: Path) -> None:
    from zoo.bench.run import detect_dataset

    ds = _pose_dataset(tmp_path)
    det = PoseMaskTruth(ds)
    doc = run([det], dataset=ds, options=BenchOptions(latency=False, evaluator="pycocotools"))
    acc = doc["models"][0]["accuracy"]
    assert set(acc) == {"bbox", "keypoints", "segm"}
    results = detect_dataset(det, ds)
    for iou in ("keypoints", "segm"):
        direct = evaluate(ds, results, iou_type=iou, evaluator="pycocotools")
        assert acc[iou]["stats"] == direct.stats
    assert acc["bbox"]["stats"]["AP"] == 1.0
    assert 0.0 < acc["segm"]["stats"]["AP"] < 1.0 and 0.0 < acc["keypoints"]["stats"]["AP"] < 1.0
    # keypoints kept in a separate file (as COCO does) are used through keypoint_dataset
    boxes_only = json.loads((tmp_path / "pose.json").read_text())
    boxes_only["categories"] = [{"id": 1, "name": "person"}]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes_only))
    box_ds = CocoDataset(tmp_path / "boxes.json", tmp_path / "images")
    doc2 = run([det], dataset=box_ds, keypoint_dataset=ds,
               options=BenchOptions(latency=False, evaluator="pycocotools"))
    assert doc2["models"][0]["accuracy"]["keypoints"]["stats"] == acc["keypoints"]["stats"]
    md_rows = [r for r in markdown(doc).splitlines() if r.startswith("- tiny_pose")]
    assert any("keypoint AP" in r for r in md_rows) and any("mask AP" in r for r in md_rows)
