"""Benchmarks: COCO accuracy, latency, memory per model and device, with reports people read.

    from zoo.bench import run, BenchOptions
    doc = run(["centernet_*"], dataset=CocoDataset(...), options=BenchOptions(device="gpu:0"), out_dir="bench/")
"""
from __future__ import annotations

from .run import BenchOptions, bench_detector, detect_dataset, run, run_multiworker

__all__ = ["BenchOptions", "bench_detector", "detect_dataset", "run", "run_multiworker"]
