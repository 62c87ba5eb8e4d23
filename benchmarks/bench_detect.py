#!/usr/bin/env python3
"""Detector benchmark: our Keras backend against the archive's SavedModel, same model, same run.

    python3 benchmarks/bench_detect.py [--repeats 15] [--cold-runs 2] [--models NAME...]
                                       [--out benchmarks/results/detect.json]
    python3 benchmarks/bench_detect.py --families [FAMILY...] [--work DIR] [--family-timeout-s 300]
                                       [--out benchmarks/results/detect_families.json]

Models: the two stand-in archives with a SavedModel (centernet_mobilenetv2fpn_512x512_coco17_od,
ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8), fetched through a file:// URL into a temporary cache.
For each it measures
  * cold start in a fresh process per run, the backends alternating: ``cold_start_s`` counts from
    TensorFlow and odzoo imported to the first detection (load, build/restore, trace, first call);
    ``end_to_end_s`` from the process start (imports included); goal: keras <= 0.25 x saved_model.
    ``keras`` is the default load, which runs the graph an earlier process traced and stored in the
    cache (one untimed process stores it first); ``keras_first_process`` turns the store off
    (``ODZOO_TRACE_CACHE=0``) and so builds the Keras model and traces it, as a model's first load does;
  * steady detect() latency on the 480x640 reference image (median); goal: keras <= 0.6 x saved_model.
    The variants are called in turn within each round (keras default = BatchNorm fused + sparse box
    heads where they apply, keras with ``fold_batchnorm="kernel"``, keras with dense box heads, keras
    unoptimised, saved_model), so machine load hits all alike;
  * batch-8 throughput of one detect() on a [8, H, W, 3] batch against 8 single calls (goal >= 2x);
  * a folder of 16 images through ``Detector.detect_files`` (decoding pipelined ahead of the model)
    against decoding then detecting one file after the other;
  * FLOPs per image (convolutions and matrix products of the traced graph), the achieved FLOP/s of
    each backend, and the ratio to the machine's peak measured in the same run (matmul / conv);
  * the accuracy cost of ``precision="float16"`` / ``"bfloat16"``: agreement of their detections
    with float32's on the reference image.
Prints a markdown table (each figure next to its goal, and whether it is met) and writes JSON
(results, goals, environment, the load average at the start and the end: the timings are only as
quiet as the machine).

``--families``: one model of each meta-architecture family (``FAMILIES``; default: those the
stand-in archives do not cover), built from its manifest as the references were (seed 0 + the
fixture's overrides, ``../shared/tools/synth_checkpoint.py``) into a zoo folder, exported once with
``zoo.export(folder, "saved_model")`` and compared with that export: cold start in fresh processes
(load + first call after the TF import; goal <= 0.25x) and steady batch-1 detect() latency (goal
<= 0.6x). ``--work DIR`` keeps the folders and exports for the next run. A family whose export or
first keras cold start does not finish within ``--family-timeout-s`` is skipped, the reason printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = ("centernet_mobilenetv2fpn_512x512_coco17_od", "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8")
TARBALLS = (ROOT / ".." / "shared" / "fixtures" / "tarballs").resolve()
SHARED = (ROOT / ".." / "shared").resolve()
#: one zoo model per meta-architecture family, for ``--families``
FAMILIES = {
    "centernet": "centernet_mobilenetv2fpn_512x512_coco17_od",
    "ssd": "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8",
    "efficientdet": "efficientdet_d0_coco17_tpu-32",
    "retinanet": "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8",
    "faster_rcnn": "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8",
    "mask_rcnn": "mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8",
}
#: the families the stand-in archives (the default run) do not already cover
DEFAULT_FAMILIES = ("efficientdet", "retinanet", "faster_rcnn", "mask_rcnn")
IMAGE = (ROOT / ".." / "shared" / "fixtures" / "inputs" / "A.png").resolve()
GOALS = {"cold_start_ratio_max": 0.25, "steady_ratio_max": 0.6, "batch8_speedup_min": 2.0}

COLD_CHILD = """
import json, sys, time
t_start = time.perf_counter()
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
stored = bool(getattr(det.runner, "stored_trace", False))
if det.backend == "keras":  # the trace happens on the first call anyway; timed apart here
    if not stored:  # a stored trace from an earlier process needs none
        det.runner.concrete_function
    trace_s = time.perf_counter() - t1
det.detect(image)
t2 = time.perf_counter()
print(json.dumps({"import_s": t0 - t_start, "load_s": t1 - t0, "first_detect_s": t2 - t1, "trace_s": trace_s,
                  "stored_trace": stored,
                  "cold_start_s": t2 - t0, "end_to_end_s": time.time() - float(sys.argv[5])}))
"""


#: cold-start variants: label -> (backend, environment). ``keras`` is the default load, which runs the graph an
#: earlier process traced and stored in the cache; ``keras_first_process`` builds and traces, as the first load
#: of a model does.
COLD_VARIANTS = {
    "keras": ("keras", {}),
    "keras_first_process": ("keras", {"ODZOO_TRACE_CACHE": "0"}),
    "saved_model": ("saved_model", {}),
}


def _cold_run(source: str, variant: str, cache: Path, image: Path, timeout: float | None = None) -> dict:
    """One fresh process: import, load ``source`` as the ``variant`` of :data:`COLD_VARIANTS` says, detect once
    (``subprocess.TimeoutExpired`` past ``timeout`` seconds)."""
    backend, extra = COLD_VARIANTS[variant]
    env = dict(os.environ, ODZOO_CACHE=str(cache), ODZOO_QUIET="1", ODZOO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3",
               **extra)
    proc = subprocess.run(
        [sys.executable, "-c", COLD_CHILD, str(ROOT), source, backend, str(image), repr(time.time())],
        env=env, capture_output=True, text=True, check=False, timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(f"cold-start run ({variant}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cold(sources: dict[str, str], cache: Path, runs: int, image: Path, timeout: float | None = None) -> dict:
    """Fresh-process cold starts of ``{variant: source}`` (:data:`COLD_VARIANTS`), the variants alternating run
    by run; one untimed ``keras`` process first stores the trace the timed ``keras`` runs reuse."""
    if "keras" in sources:
        _cold_run(sources["keras"], "keras", cache, image, timeout)
    samples: dict[str, list[dict]] = {b: [] for b in sources}
    for _ in range(runs):
        for b, source in sources.items():
            samples[b].append(_cold_run(source, b, cache, image, timeout))
    out = {}
    for b, runs_b in samples.items():
        best = min(runs_b, key=lambda s: s["cold_start_s"])
        out[b] = {"runs": runs_b, "best": best,
                  "median_cold_start_s": statistics.median(s["cold_start_s"] for s in runs_b),
                  "median_end_to_end_s": statistics.median(s["end_to_end_s"] for s in runs_b)}
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

    return Detector(KerasBackend(det.net, **options), spec=det.spec, label_map=det.label_map)


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


def _pipeline(det, image, tmp: Path, count: int = 16) -> dict:
    """A folder of ``count`` PNGs: pipelined ``detect_files`` against decode-then-detect file by file."""
    from PIL import Image

    from zoo.images import load_image

    folder = tmp / "images"
    folder.mkdir(exist_ok=True)
    for i in range(count):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    files = sorted(folder.iterdir())
    list(det.detect_files(folder))  # warm-up: tf.data and the model's trace
    serial, pipelined = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        for f in files:
            det.detect(load_image(f))
        serial.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in det.detect_files(folder):
            pass
        pipelined.append(time.perf_counter() - t0)
    s, p = min(serial), min(pipelined)
    return {"images": count, "serial_s": s, "pipelined_s": p, "serial_images_per_s": count / s,
            "pipelined_images_per_s": count / p, "speedup": s / p}


def _precision_cost(det, image) -> dict:
    """Agreement with float32 of the detections at lower precision (reference image, CPU)."""
    from zoo.agreement import detection_agreement
    from zoo.backends.keras_backend import KerasBackend

    reference = det.runner.infer(image[None])
    out = {}
    for precision in ("float16", "bfloat16"):
        try:
            got = KerasBackend(det.net, precision=precision).infer(image[None])
            out[precision] = detection_agreement(reference, got)
        except Exception as exc:  # recorded, not fatal
            out[precision] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _bench_model(name: str, args, image, image_path: Path, tmp: Path, peak: float) -> dict:
    from zoo.bench.flops import detector_flops
    from zoo.hub import fetch
    from zoo.loading import load

    cache = tmp / "cache"
    source = (args.tarballs / f"{name}.tar.gz").resolve().as_uri()
    fetch(source, cache_dir=cache)  # cached before any timing
    cold = _cold({"keras": source, "keras_first_process": source, "saved_model": source}, cache, args.cold_runs,
                 image_path)
    keras_det = load(source, backend="keras", cache_dir=cache)
    detectors = {
        "keras": keras_det,
        "keras_kernel_fold": _variant(keras_det, fold_batchnorm="kernel"),
        "keras_unoptimised": _variant(keras_det, fold_batchnorm=False),
        "saved_model": load(source, backend="saved_model", cache_dir=cache),
    }
    if keras_det.runner.sparse_heads:
        detectors["keras_dense_heads"] = _variant(keras_det, sparse_heads=False)
    steady = _steady(detectors, image, args.repeats)
    batch = {b: _batch(detectors[b], image, args.repeats) for b in ("keras", "saved_model")}
    pipeline = _pipeline(keras_det, image, tmp)
    traces = keras_det.runner.trace_count
    flops = detector_flops(_variant(keras_det).runner._serve, tuple(image.shape))
    dense_flops = detector_flops(_variant(keras_det, sparse_heads=False).runner._serve, tuple(image.shape))
    per_image = flops["flops_per_image"]
    achieved = {b: per_image / steady[b]["median_s"] for b in ("keras", "saved_model")}
    achieved_batch = per_image * batch["keras"]["batch8_images_per_s"]
    sm, ks = steady["saved_model"]["median_s"], cold["saved_model"]["median_cold_start_s"]
    ratios = {f"steady_{b}_over_saved_model": steady[b]["median_s"] / sm for b in detectors if b != "saved_model"}
    ratios["cold_start_keras_over_saved_model"] = cold["keras"]["median_cold_start_s"] / ks
    ratios["cold_start_keras_first_process_over_saved_model"] = cold["keras_first_process"]["median_cold_start_s"] / ks
    ratios["end_to_end_keras_over_saved_model"] = (
        cold["keras"]["median_end_to_end_s"] / cold["saved_model"]["median_end_to_end_s"]
    )
    return {
        "cold_start": cold,
        "steady": {b: {k: v for k, v in s.items() if k != "samples_s"} for b, s in steady.items()},
        "steady_samples_s": {b: s["samples_s"] for b, s in steady.items()},
        "batch8": batch,
        "pipeline": pipeline,
        "precision_agreement_with_float32": _precision_cost(keras_det, image),
        "flops": {
            "flops_per_image": per_image,
            "flops_per_image_dense_heads": dense_flops["flops_per_image"],
            "achieved_flops_per_s": achieved,
            "achieved_flops_per_s_keras_batch8": achieved_batch,
            "fraction_of_peak": {b: v / peak for b, v in achieved.items()},
            "fraction_of_peak_keras_batch8": achieved_batch / peak,
            "note": "convolutions and matrix products of the keras graph traced for this image; the "
                    "SavedModel runs the same network (its dense box heads add "
                    f"{(dense_flops['flops_per_image'] - per_image) / 1e9:.3f} GFLOP when sparse heads apply)",
        },
        "keras_traces": traces,
        "keras_batchnorms_folded": keras_det.runner.folded_batchnorms,
        "keras_sparse_heads": keras_det.runner.sparse_heads,
        "ratios": ratios,
        "goals_met": {
            "cold_start": ratios["cold_start_keras_over_saved_model"] <= GOALS["cold_start_ratio_max"],
            "steady": ratios["steady_keras_over_saved_model"] <= GOALS["steady_ratio_max"],
            "batch8": batch["keras"]["speedup"] >= GOALS["batch8_speedup_min"],
        },
    }


EXPORT_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import zoo
zoo.export(sys.argv[2], "saved_model", out=sys.argv[3])
"""


class FamilySkipped(Exception):
    """A family that cannot be measured here: too slow for the time allowed, or its export failed (the reason
    is the message)."""


def parse_families(names: list[str]) -> tuple[str, ...]:
    """``--families`` names, checked (ValueError naming the unknown ones); no names = ``DEFAULT_FAMILIES``."""
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown famil{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}; "
                         f"choose from {', '.join(FAMILIES)}")
    return tuple(dict.fromkeys(names)) or DEFAULT_FAMILIES


def _zoo_folder(name: str, work: Path) -> Path:
    """``work/zoo/NAME``: the model's pipeline.config and its reference checkpoint (seed 0 + overrides),
    written once and reused; complete or absent."""
    from bench_float64 import write_checkpoint

    folder = work / "zoo" / name
    if (folder / "checkpoint" / "ckpt-0.index").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        shutil.copyfile(SHARED / "configs" / name / "pipeline.config", staging / "pipeline.config")
        write_checkpoint(name, staging / "checkpoint")
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _exported(folder: Path, work: Path, timeout: float) -> tuple[Path, float | None]:
    """``folder`` exported once to a SavedModel in the zoo layout (``work/exports/NAME``, reused when
    present), in a fresh process; the seconds it took (None when reused)."""
    out = work / "exports" / folder.name
    if out.is_dir():
        return out, None
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{folder.name}-{os.getpid()}"
    env = dict(os.environ, ODZOO_QUIET="1", ODZOO_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", EXPORT_CHILD, str(ROOT), str(folder), str(staging)],
                              env=env, capture_output=True, text=True, check=False, timeout=timeout)
        if proc.returncode != 0:
            last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["no message"]
            raise FamilySkipped(f"zoo.export to saved_model failed: {last[0].strip()}")
        staging.rename(out)
    except subprocess.TimeoutExpired:
        raise FamilySkipped(f"the SavedModel export did not finish within {timeout:.0f} s on this machine") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out, time.perf_counter() - t0


def _bench_family(family: str, args, image, image_path: Path, work: Path) -> dict:
    """Keras backend against the model's own export: fresh-process cold start and steady batch-1 latency."""
    import gc

    from zoo.loading import load

    name = FAMILIES[family]
    t0 = time.perf_counter()
    folder = _zoo_folder(name, work)
    checkpoint_s = time.perf_counter() - t0
    export, export_s = _exported(folder, work, args.family_timeout_s)
    sources = {"keras": str(folder), "saved_model": str(export)}
    try:
        cold = _cold({**sources, "keras_first_process": str(folder)}, work / "cache", args.cold_runs, image_path,
                     args.family_timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise FamilySkipped(f"a cold start did not finish within {args.family_timeout_s:.0f} s on this machine "
                            f"({exc.cmd[5]} backend)") from None
    detectors = {b: load(src, backend=b) for b, src in sources.items()}
    steady = _steady(detectors, image, args.repeats)
    del detectors
    gc.collect()
    ratios = {
        "cold_start_keras_over_saved_model": cold["keras"]["median_cold_start_s"] / cold["saved_model"]["median_cold_start_s"],
        "cold_start_keras_first_process_over_saved_model":
            cold["keras_first_process"]["median_cold_start_s"] / cold["saved_model"]["median_cold_start_s"],
        "steady_keras_over_saved_model": steady["keras"]["median_s"] / steady["saved_model"]["median_s"],
    }
    return {
        "model": name,
        "checkpoint_written_s": checkpoint_s,
        "export_s": export_s,
        "cold_start": cold,
        "steady": {b: {k: v for k, v in s.items() if k != "samples_s"} for b, s in steady.items()},
        "steady_samples_s": {b: s["samples_s"] for b, s in steady.items()},
        "ratios": ratios,
        "goals_met": {
            "cold_start": ratios["cold_start_keras_over_saved_model"] <= GOALS["cold_start_ratio_max"],
            "steady": ratios["steady_keras_over_saved_model"] <= GOALS["steady_ratio_max"],
        },
    }


def families_table(families: dict) -> list[str]:
    """Markdown rows for ``--families``: each figure with its goal and whether it is met; skips with their reason."""
    lines = ["| family (model) | figure | keras | saved_model (own export) | keras / saved_model | goal | met |",
             "|---|---|---|---|---|---|---|"]
    for family, m in families.items():
        if "skipped" in m:
            lines.append(f"| {family} ({m['model']}) | skipped | {m['skipped']} | | | | |")
            continue
        cold, steady, r = m["cold_start"], m["steady"], m["ratios"]
        label = f"{family} ({m['model']})"
        lines.append(f"| {label} | cold start: load + first call after the TF import | "
                     f"{cold['keras']['median_cold_start_s']:.2f} s | {cold['saved_model']['median_cold_start_s']:.2f} s | "
                     f"{r['cold_start_keras_over_saved_model']:.2f}x | <= {GOALS['cold_start_ratio_max']}x | "
                     f"{_yes(m['goals_met']['cold_start'])} |")
        lines.append(f"| {label} | cold start, first process (build + trace, nothing stored yet) | "
                     f"{cold['keras_first_process']['median_cold_start_s']:.2f} s | | "
                     f"{r['cold_start_keras_first_process_over_saved_model']:.2f}x | | |")
        lines.append(f"| {label} | steady detect() batch 1 (median) | {steady['keras']['median_s'] * 1e3:.1f} ms | "
                     f"{steady['saved_model']['median_s'] * 1e3:.1f} ms | {r['steady_keras_over_saved_model']:.2f}x | "
                     f"<= {GOALS['steady_ratio_max']}x | {_yes(m['goals_met']['steady'])} |")
    return lines


def run_families(args, image, image_path: Path) -> dict:
    """``--families``: every requested family measured in turn (one skipped with its reason when too slow)."""
    from zoo.bench.env import fingerprint

    load_start = os.getloadavg()
    families = {}
    with tempfile.TemporaryDirectory(prefix="odzoo-bench-families-") as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        for family in args.families:
            t0 = time.perf_counter()
            try:
                families[family] = _bench_family(family, args, image, image_path, work)
            except FamilySkipped as exc:
                families[family] = {"model": FAMILIES[family], "skipped": str(exc)}
                print(f"{family}: skipped: {exc}", flush=True)
            families[family]["wall_s"] = time.perf_counter() - t0
            print(f"{family}: done in {families[family]['wall_s']:.0f} s", flush=True)
    return {
        "image": {"path": image_path.name, "shape": list(image.shape)},
        "source": "zoo folders built from the manifests (seed 0 + fixture overrides), each exported once "
                  "with zoo.export(folder, 'saved_model') and loaded with backend='saved_model'",
        "iterations": {"cold_runs_per_backend": args.cold_runs, "steady_repeats": args.repeats},
        "family_timeout_s": args.family_timeout_s,
        "families": families,
        "goals": {k: GOALS[k] for k in ("cold_start_ratio_max", "steady_ratio_max")},
        "environment": fingerprint(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
    }


def summary_table(models: dict) -> list[str]:
    """A markdown table: each figure with its goal and whether it is met."""
    lines = ["| model | figure | keras | saved_model | keras / saved_model | goal | met |", "|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        cold, steady, batch, flops, r = m["cold_start"], m["steady"], m["batch8"], m["flops"], m["ratios"]
        ck, cs = cold["keras"]["median_cold_start_s"], cold["saved_model"]["median_cold_start_s"]
        lines.append(f"| {name} | cold start after the TF import (graph stored by an earlier process) | {ck:.2f} s"
                     f"{_stages(cold['keras']['best'])} | {cs:.2f} s | {r['cold_start_keras_over_saved_model']:.2f}x | "
                     f"<= {GOALS['cold_start_ratio_max']}x | {_yes(m['goals_met']['cold_start'])} |")
        first = cold["keras_first_process"]
        lines.append(f"| {name} | cold start, first process (build + trace, nothing stored yet) | "
                     f"{first['median_cold_start_s']:.2f} s{_stages(first['best'])} | | "
                     f"{r['cold_start_keras_first_process_over_saved_model']:.2f}x | | |")
        sk, ss = steady["keras"]["median_s"], steady["saved_model"]["median_s"]
        lines.append(f"| {name} | steady detect() batch 1 (median) | {sk * 1e3:.1f} ms | {ss * 1e3:.1f} ms | "
                     f"{r['steady_keras_over_saved_model']:.2f}x | <= {GOALS['steady_ratio_max']}x | {_yes(m['goals_met']['steady'])} |")
        bk, bs = batch["keras"], batch["saved_model"]
        lines.append(f"| {name} | batch 8 vs 8 single calls | {bk['speedup']:.2f}x ({bk['batch8_images_per_s']:.1f} vs "
                     f"{bk['single_images_per_s']:.1f} img/s) | {bs['speedup']:.2f}x | - | >= {GOALS['batch8_speedup_min']}x | "
                     f"{_yes(m['goals_met']['batch8'])} |")
        frac = flops["fraction_of_peak"]
        lines.append(f"| {name} | achieved FLOP/s, {flops['flops_per_image'] / 1e9:.2f} GFLOP/image | "
                     f"{flops['achieved_flops_per_s']['keras'] / 1e9:.1f} GFLOP/s = {frac['keras']:.0%} of peak (batch 8: "
                     f"{flops['fraction_of_peak_keras_batch8']:.0%}) | {frac['saved_model']:.0%} of peak | - | - | - |")
        for variant in ("keras_kernel_fold", "keras_dense_heads", "keras_unoptimised"):
            if variant in steady:
                lines.append(f"| {name} | steady, {variant} | {steady[variant]['median_s'] * 1e3:.1f} ms | | "
                             f"{r[f'steady_{variant}_over_saved_model']:.2f}x | | |")
    return lines


def _stages(run: dict) -> str:
    return (f" (load {run['load_s']:.2f} s, trace {run['trace_s']:.2f} s, "
            f"rest of first call {run['first_detect_s'] - run['trace_s']:.2f} s)")


def _yes(met: bool) -> str:
    return "yes" if met else "no"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, help="timed detect() calls per variant (default 15; 5 with --families)")
    parser.add_argument("--cold-runs", type=int,
                        help="fresh processes per backend for cold start (default 2; 1 with --families)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="stand-in archive names")
    parser.add_argument("--families", nargs="*", metavar="FAMILY",
                        help=f"instead of the archives, one model per family against its own export: "
                             f"{', '.join(FAMILIES)} (no names: {', '.join(DEFAULT_FAMILIES)})")
    parser.add_argument("--work", type=Path, help="--families: folder keeping the zoo folders and exports between runs")
    parser.add_argument("--family-timeout-s", type=float, default=300.0,
                        help="--families: skip a family whose export or a cold start takes longer (seconds)")
    parser.add_argument("--out", type=Path, help="JSON written (default benchmarks/results/detect.json, "
                                                 "detect_families.json with --families)")
    parser.add_argument("--tarballs", type=Path, default=TARBALLS, help="folder of the stand-in archives")
    parser.add_argument("--image", type=Path, default=IMAGE, help="the reference image (default: ../shared)")
    args = parser.parse_args(argv)
    families_mode = args.families is not None
    args.repeats = (5 if families_mode else 15) if args.repeats is None else args.repeats
    args.cold_runs = (1 if families_mode else 2) if args.cold_runs is None else args.cold_runs
    results = ROOT / "benchmarks" / "results"
    args.out = args.out or results / ("detect_families.json" if families_mode else "detect.json")
    if args.repeats < 1 or args.cold_runs < 1:
        parser.error("--repeats and --cold-runs must be >= 1")
    if families_mode:
        try:
            args.families = parse_families(args.families)
        except ValueError as exc:
            parser.error(f"--families: {exc}")
        if args.family_timeout_s <= 0:
            parser.error("--family-timeout-s must be > 0")
        if args.work is not None and args.work.exists() and not args.work.is_dir():
            parser.error(f"--work: {args.work} exists and is not a folder")
    elif args.work is not None:
        parser.error("--work applies only with --families")

    import numpy as np
    from PIL import Image

    from zoo.bench.env import fingerprint
    from zoo.bench.flops import measure_peak

    image_path = args.image.resolve()
    image = np.asarray(Image.open(image_path).convert("RGB"))
    os.environ["ODZOO_QUIET"] = "1"
    if families_mode:
        result = run_families(args, image, image_path)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"load average {result['load_average_at_start'][0]:.2f} at the start, "
              f"{result['load_average_at_end'][0]:.2f} at the end")
        for line in families_table(result["families"]):
            print(line)
        print(f"  written to {args.out}")
        return 0
    load_start = os.getloadavg()
    peak = measure_peak(1.0)
    models = {}
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix="odzoo-bench-") as tmp:
            models[name] = _bench_model(name, args, image, image_path, Path(tmp), peak["peak_flops_per_s"])
    peak_after = measure_peak(1.0)
    result = {
        "image": {"path": image_path.name, "shape": list(image.shape)},
        "source": "file:// URL of each stand-in archive, fetched into a temporary cache before timing",
        "peak": {"before": peak, "after": peak_after},
        "models": models,
        "goals": GOALS,
        "environment": fingerprint(),
        "load_average_at_start": load_start,
        "load_average_at_end": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"peak {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s before, {peak_after['peak_flops_per_s'] / 1e9:.1f} after; "
          f"load average {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    for line in summary_table(models):
        print(line)
    for name, m in models.items():
        print(f"{name}: pipeline {m['pipeline']['speedup']:.2f}x; precision agreement {m['precision_agreement_with_float32']}")
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
