#!/usr/bin/env python3
"""Detector benchmark: our Keras backend against the archive's SavedModel, same model, same run.

    python3 benchmarks/bench_detect.py [--repeats 20] [--cold-runs 2] [--out benchmarks/results/detect.json]

Model: the centernet_mobilenetv2fpn_512x512_coco17_od stand-in archive (it has a SavedModel), fetched
through a file:// URL into a temporary cache. Measures
  * cold start: cached model -> first detection, in a fresh process per run (TensorFlow and odzoo
    already imported, so only loading, building/restoring, tracing and the first call count);
    goal: keras <= 0.25 x saved_model;
  * steady detect() latency on the 480x640 reference image (median); goal: keras <= 0.8 x saved_model.
    The backends are called in turn within each round (keras default = BatchNorm fused + sparse box
    heads, keras with ``fold_batchnorm="kernel"``, keras with dense box heads, keras unoptimised,
    saved_model), so machine load hits all alike;
  * batch-8 throughput of one detect() on a [8, H, W, 3] batch against 8 single calls.
Cold-start runs alternate between the backends too. Prints a summary and writes JSON (results,
goals, environment).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "centernet_mobilenetv2fpn_512x512_coco17_od"
TARBALL = (ROOT / ".." / "shared" / "fixtures" / "tarballs" / f"{NAME}.tar.gz").resolve()
IMAGE = (ROOT / ".." / "shared" / "fixtures" / "inputs" / "A.png").resolve()

COLD_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, tensorflow as tf
from PIL import Image
import zoo
from zoo.loading import load
image = np.asarray(Image.open(sys.argv[4]).convert("RGB"))
t0 = time.perf_counter()
det = load(sys.argv[2], backend=sys.argv[3])
t1 = time.perf_counter()
trace_s = None
if det.backend == "keras":  # the trace happens on the first call anyway; timed apart here
    det.runner.concrete_function
    trace_s = time.perf_counter() - t1
det.detect(image)
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "first_detect_s": t2 - t1, "trace_s": trace_s, "cold_start_s": t2 - t0}))
"""


def _cold_run(source: str, backend: str, cache: Path, image: Path) -> dict:
    env = dict(os.environ, ODZOO_CACHE=str(cache), ODZOO_QUIET="1", ODZOO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", COLD_CHILD, str(ROOT), source, backend, str(image)],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"cold-start run ({backend}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cold(source: str, backends: tuple[str, ...], cache: Path, runs: int, image: Path) -> dict:
    """Fresh-process cold starts, the backends alternating run by run."""
    samples: dict[str, list[dict]] = {b: [] for b in backends}
    for _ in range(runs):
        for b in backends:
            samples[b].append(_cold_run(source, b, cache, image))
    out = {}
    for b, runs_b in samples.items():
        best = min(runs_b, key=lambda s: s["cold_start_s"])
        out[b] = {"runs": runs_b, "best": best,
                  "median_cold_start_s": statistics.median(s["cold_start_s"] for s in runs_b)}
    return out


def _steady(detectors: dict, image, repeats: int) -> dict:
    """Median detect() latency per detector, the detectors called in turn within each round."""
    for det in detectors.values():
        det.detect(image)  # warm-up (trace / first call)
    times: dict[str, list[float]] = {n: [] for n in detectors}
    for _ in range(repeats):
        for n, det in detectors.items():
            t0 = time.perf_counter()
            det.detect(image)
            times[n].append(time.perf_counter() - t0)
    return {n: {"median_s": statistics.median(t), "min_s": min(t), "samples_s": t} for n, t in times.items()}


def _variant(det, **options):
    """The same loaded network behind a keras backend with other options (``fold_batchnorm``...)."""
    from zoo.backends.keras_backend import KerasBackend
    from zoo.detector import Detector

    return Detector(KerasBackend(det.net, **options), spec=det.spec, label_map=det.label_map, net=det.net)


def _batch(det, image, repeats: int) -> dict:
    import numpy as np

    batch = np.stack([image] * 8)
    det.detect(batch)
    batched, singles = [], []
    for _ in range(max(3, repeats // 4)):
        t0 = time.perf_counter()
        det.detect(batch)
        batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(8):
            det.detect(batch[i])
        singles.append(time.perf_counter() - t0)
    b, s = statistics.median(batched), statistics.median(singles)
    return {
        "batch8_call_s": b,
        "eight_single_calls_s": s,
        "batch8_images_per_s": 8 / b,
        "single_images_per_s": 8 / s,
        "speedup": s / b,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed detect() calls per backend")
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes per backend for cold start")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "detect.json")
    parser.add_argument("--tarball", type=Path, default=TARBALL, help="the stand-in archive (default: ../shared)")
    parser.add_argument("--image", type=Path, default=IMAGE, help="the reference image (default: ../shared)")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from zoo.hub import fetch
    from zoo.loading import load

    source = args.tarball.resolve().as_uri()
    image_path = args.image.resolve()
    image = np.asarray(Image.open(image_path).convert("RGB"))
    with tempfile.TemporaryDirectory(prefix="odzoo-bench-") as tmp:
        cache = Path(tmp) / "cache"
        os.environ["ODZOO_CACHE"] = str(cache)
        os.environ["ODZOO_QUIET"] = "1"
        fetch(source, cache_dir=cache)  # cached before any timing

        cold = _cold(source, ("keras", "saved_model"), cache, args.cold_runs, image_path)
        keras_det = load(source, backend="keras", cache_dir=cache)
        detectors = {
            "keras": keras_det,
            "keras_kernel_fold": _variant(keras_det, fold_batchnorm="kernel"),
            "keras_dense_heads": _variant(keras_det, sparse_heads=False),
            "keras_unoptimised": _variant(keras_det, fold_batchnorm=False),
            "saved_model": load(source, backend="saved_model", cache_dir=cache),
        }
        steady = _steady(detectors, image, args.repeats)
        batch = {b: _batch(detectors[b], image, args.repeats) for b in ("keras", "saved_model")}
        result = {
            "model": NAME,
            "source": "file:// URL of the stand-in archive, fetched into a temporary cache before timing",
            "image": {"path": image_path.name, "shape": list(image.shape)},
            "cold_start": cold,
            "steady": {b: {k: v for k, v in s.items() if k != "samples_s"} for b, s in steady.items()},
            "steady_samples_s": {b: s["samples_s"] for b, s in steady.items()},
            "batch8": batch,
            "keras_traces": keras_det.runner.trace_count,
            "keras_batchnorms_folded": keras_det.runner.folded_batchnorms,
            "keras_sparse_heads": keras_det.runner.sparse_heads,
            "ratios": {
                "cold_start_keras_over_saved_model": cold["keras"]["median_cold_start_s"]
                / cold["saved_model"]["median_cold_start_s"],
                "steady_keras_over_saved_model": steady["keras"]["median_s"] / steady["saved_model"]["median_s"],
                "steady_keras_kernel_fold_over_saved_model": steady["keras_kernel_fold"]["median_s"]
                / steady["saved_model"]["median_s"],
                "steady_keras_dense_heads_over_saved_model": steady["keras_dense_heads"]["median_s"]
                / steady["saved_model"]["median_s"],
                "steady_keras_unoptimised_over_saved_model": steady["keras_unoptimised"]["median_s"]
                / steady["saved_model"]["median_s"],
            },
            "goals": {"cold_start_ratio_max": 0.25, "steady_ratio_max": 0.8},
            "environment": {
                "python": platform.python_version(),
                "tensorflow": tf.__version__,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
            },
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    r = result["ratios"]
    result["goals_met"] = {
        "cold_start": r["cold_start_keras_over_saved_model"] <= 0.25,
        "steady": r["steady_keras_over_saved_model"] <= 0.8,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"model {NAME} on {result['environment']['cpus']} CPUs, GPUs: {result['environment']['gpus'] or 'none'}")
    for b in ("keras", "saved_model"):
        print(
            f"  {b:<12} cold start {cold[b]['median_cold_start_s']:.2f} s   steady {steady[b]['median_s'] * 1e3:.1f} ms"
            f"   batch-8 {batch[b]['batch8_images_per_s']:.1f} img/s vs single {batch[b]['single_images_per_s']:.1f} img/s"
        )
    for b in ("keras_kernel_fold", "keras_dense_heads", "keras_unoptimised"):
        print(f"  {b:<18} steady {steady[b]['median_s'] * 1e3:.1f} ms")
    print(f"  cold-start ratio keras/saved_model {r['cold_start_keras_over_saved_model']:.3f} (goal <= 0.25)")
    print(f"  steady ratio keras/saved_model     {r['steady_keras_over_saved_model']:.3f} (goal <= 0.8)")
    print(f"  steady ratio, kernel fold          {r['steady_keras_kernel_fold_over_saved_model']:.3f}")
    print(f"  steady ratio, dense box heads      {r['steady_keras_dense_heads_over_saved_model']:.3f}")
    print(f"  steady ratio, unoptimised keras    {r['steady_keras_unoptimised_over_saved_model']:.3f}")
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
