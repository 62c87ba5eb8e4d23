"""Evaluation across two worker processes (MultiWorkerMirroredStrategy on 127.0.0.1, CPU).

The merged statistics must equal the single-process run's exactly.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.test_detector import TruthDetector, jitter_truth
from zoo.bench.run import detect_dataset
from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.eval import evaluate

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import json, sys
from zoo.bench.distributed import multiworker_strategy
strategy = multiworker_strategy()  # first, before any other TensorFlow work
from tests.bench.test_detector import TruthDetector, jitter_truth
from zoo.bench import BenchOptions, run_multiworker
from zoo.datasets import CocoDataset
ann, images, out = sys.argv[1:4]
ds = CocoDataset(ann, images)
record = run_multiworker(TruthDetector(ds, jitter_truth), ds, strategy=strategy, out_dir=out,
                         options=BenchOptions(evaluator="pycocotools"))
print("RECORD", json.dumps(record))
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_equal_single_process(tmp_path: Path) -> None:
    root = make_shapes_dataset(tmp_path / "data", 7, seed=21, image_size=(64, 80), max_objects=4)
    ds = CocoDataset(root / "annotations.json", root / "images")
    single = evaluate(ds, detect_dataset(TruthDetector(ds, jitter_truth), ds), evaluator="pycocotools")
    assert 0.0 < single.stats["AP"] < 1.0

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "out"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root / "annotations.json"), str(root / "images"), str(out)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=180)
            outputs.append((p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for rc, _stdout, stderr in outputs:
        assert rc == 0, stderr[-3000:]
    records = [json.loads(line.split(" ", 1)[1]) for _, stdout, _ in outputs
               for line in stdout.splitlines() if line.startswith("RECORD ")]
    chief, other = records
    assert other is None and chief["workers"] == 2
    assert chief["accuracy"]["bbox"]["stats"] == single.stats
    assert chief["accuracy"]["bbox"]["num_detections"] == single.num_detections
    assert json.loads((out / "eval.json").read_text())["accuracy"]["bbox"]["stats"] == single.stats
    parts = [json.loads((out / f"detections.worker-{i}.json").read_text()) for i in range(2)]
    assert {r["image_id"] for r in parts[0]} <= {1, 3, 5, 7} and {r["image_id"] for r in parts[1]} <= {2, 4, 6}
    assert len(parts[0]) + len(parts[1]) == single.num_detections


def test_worker_without_tf_config_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.bench.distributed import multiworker_strategy
    from zoo.errors import DeviceError

    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DeviceError, match="TF_CONFIG"):
        multiworker_strategy()
