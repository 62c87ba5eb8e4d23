#!/usr/bin/env python3
"""Float32 round-off in deep detectors: our Keras models in float32 and in float64 against the original.

    python3 benchmarks/bench_float64.py [MODEL ...] [--xla] [--sensitivity] [--check] [--out FILE.json]
    python3 benchmarks/bench_float64.py --report FILE.json [FILE.json ...] [--check]

For each model (default: every deep one, ``DEEP_MODELS``) the reference checkpoint is synthesized from
the zoo manifest (seed 0 + the fixture's ``overrides.npz``, as the tests do); then, one model per
process (memory), our model is built, restored and run on ``inputs/A.png`` as the keras backend runs
it (``predict`` traced by ``tf.function``, which also frees each activation once used): once as shipped
(float32) and once with the Keras dtype policy ``float64`` (every variable and every layer's arithmetic
in float64; pre-processing stays float32 as in the original, so both networks see the same input, and
post-processing gets the network's outputs rounded to float32, which moves a score by ~6e-8 at most).
``--xla`` adds a float32 run compiled by XLA (other kernels and summation order: a second, independent
float32 evaluation); ``--sensitivity`` a float64 run with every weight scaled by 1 +- 2**-24.

Each run is compared with the original's ``reference.npz``: detection count, classes and anchor indices
(order); the largest score and box (pixels of the 480x640 input) difference over the ranks holding the
same anchor and class in both; the relative L2 distance of the class logits and box encodings on the
reference's sample of them. float32 - float64 is how far float32 arithmetic alone moves the network.
``--check`` exits 1 unless, for every model, our float32 run is within ``ROUND_OFF_FACTOR`` times that
distance of the reference (see :func:`round_off_check`). Prints a Markdown table (docs/numerics.md) and
writes JSON with timings and peak memory; ``--report`` re-renders it from saved JSON files.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = (ROOT / ".." / "shared").resolve()
FIXTURES = SHARED / "fixtures"
IMAGE = FIXTURES / "inputs" / "A.png"

DEEP_MODELS = (
    "efficientdet_d2_coco17_tpu-32",
    "efficientdet_d3_coco17_tpu-32",
    "efficientdet_d4_coco17_tpu-32",
    "ssd_resnet101_v1_fpn_640x640_coco17_tpu-8",
    "ssd_resnet152_v1_fpn_640x640_coco17_tpu-8",
    "efficientdet_d5_coco17_tpu-32",
    "ssd_resnet101_v1_fpn_1024x1024_coco17_tpu-8",
    "ssd_resnet152_v1_fpn_1024x1024_coco17_tpu-8",
    "efficientdet_d6_coco17_tpu-32",
    "efficientdet_d7_coco17_tpu-32",
)
# --check: our float32 detections may differ from the reference by at most this many times the
# distance float32 arithmetic itself puts between our float32 and float64 runs (docs/numerics.md).
ROUND_OFF_FACTOR = 2.0
HEAD_KEYS = ("class_predictions_with_background", "box_encodings")


def write_checkpoint(name: str, folder: Path) -> None:
    """The checkpoint the references were computed with (seed 0 + the fixture's overrides)."""
    subprocess.run(
        [sys.executable, str(SHARED / "tools" / "synth_checkpoint.py"), str(SHARED / "manifests" / f"{name}.json"),
         str(folder), "--seed", "0", "--overrides", str(FIXTURES / name / "overrides.npz")],
        check=True, capture_output=True,
    )


def run_model(name: str, checkpoint: Path, dtype: str, out: Path) -> dict:
    """Build, restore and run one model in ``dtype`` (this process only); save its outputs to ``out``."""
    import keras

    perturb, xla = dtype == "float64-perturbed", dtype == "float32-xla"
    dtype = {"float64-perturbed": "float64", "float32-xla": "float32"}.get(dtype, dtype)
    if dtype == "float64":
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
    import tensorflow as tf
    from PIL import Image

    from zoo.checkpoint import restore
    from zoo.models.builder import build_model

    t0 = time.perf_counter()
    net = build_model(SHARED / "configs" / name / "pipeline.config")
    t1 = time.perf_counter()
    report = restore(net.checkpoint_map(), checkpoint, model_variables=net.keras_model.weights)
    if perturb:  # every weight moved by one float32 rounding's worth, 2**-24 relative, random sign
        rng = np.random.default_rng(0)
        for variable in net.keras_model.weights:
            value = np.asarray(variable)
            variable.assign(value * (1.0 + rng.choice([-1.0, 1.0], size=value.shape) * 2.0**-24))
    t2 = time.perf_counter()
    image = np.asarray(Image.open(IMAGE).convert("RGB"))[np.newaxis]
    preprocessed, true_shapes = net.preprocess(tf.constant(image))
    # traced, as the keras backend runs it: the graph frees each activation once used (eager keeps them)
    predictions = tf.function(net.predict)(preprocessed)
    if xla:  # the network compiled by XLA: its own kernels, fusions and summation order
        compiled = tf.function(lambda x: net.keras_model(x), jit_compile=True)(preprocessed)
        predictions = {k: compiled[k] if k in HEAD_KEYS else v for k, v in predictions.items()}
    head_dtype = predictions["class_predictions_with_background"].dtype.name
    if head_dtype != dtype:
        raise RuntimeError(f"{name}: the network computed in {head_dtype}, not {dtype}")
    predictions = {k: _to_float32(v) for k, v in predictions.items()}
    detections = {k: v.numpy() for k, v in net.postprocess(predictions, true_shapes).items()}
    t3 = time.perf_counter()
    ref = np.load(FIXTURES / name / "reference.npz")
    heads = {}
    for key in HEAD_KEYS:
        full = np.asarray(predictions[key])
        idx = ref[f"predict/{key}__sample_idx"] if f"predict/{key}__sample_idx" in ref else np.arange(full.size)
        heads[f"head/{key}"] = full.ravel()[idx]
    np.savez(out, **{f"det/{k}": v for k, v in detections.items()}, **heads)
    return {
        "restore_ok": report.ok, "build_s": t1 - t0, "restore_s": t2 - t1, "run_s": t3 - t2,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _to_float32(value):
    import tensorflow as tf

    if isinstance(value, (list, tuple)):
        return [_to_float32(v) for v in value]
    return tf.cast(value, tf.float32) if value.dtype == tf.float64 else value


def _child(name: str, checkpoint: Path, dtype: str, out: Path) -> dict:
    """Run one model in a fresh process (one model per process keeps memory at one model's)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, str(checkpoint), dtype, str(out)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} ({dtype}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def reference(name: str) -> dict[str, np.ndarray]:
    ref = np.load(FIXTURES / name / "reference.npz")
    out = {f"det/{k.removeprefix('postprocess/')}": ref[k] for k in ref.files if k.startswith("postprocess/detection")}
    out["det/num_detections"] = ref["postprocess/num_detections"]
    for key in HEAD_KEYS:
        sample = f"predict/{key}__sample_val"
        out[f"head/{key}"] = ref[sample] if sample in ref else ref[f"predict/{key}"].ravel()
    return out


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], image_hw: tuple[int, int]) -> dict:
    """Detections and head outputs of ``a`` against ``b`` (``b``'s detection count).

    Scores and boxes are compared rank by rank, over the ranks where both hold the same anchor and
    class; the logits' distance covers the whole sample whatever the ranking.
    """
    n = int(b["det/num_detections"][0])
    same_class = a["det/detection_classes"][0, :n] == b["det/detection_classes"][0, :n]
    same_anchor = a["det/detection_anchor_indices"][0, :n] == b["det/detection_anchor_indices"][0, :n]
    both = same_class & same_anchor
    scale = np.array([image_hw[0], image_hw[1], image_hw[0], image_hw[1]], np.float64)
    dscore = np.abs(a["det/detection_scores"][0, :n].astype(np.float64) - b["det/detection_scores"][0, :n])[both]
    dbox = (np.abs(a["det/detection_boxes"][0, :n].astype(np.float64) - b["det/detection_boxes"][0, :n]) * scale)[both]
    heads = {}
    for key in HEAD_KEYS:
        x, y = a[f"head/{key}"].astype(np.float64), b[f"head/{key}"].astype(np.float64)
        heads[key] = float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-300))
    return {
        "num_detections": n,
        "same_num_detections": int(a["det/num_detections"][0]) == n,
        "class_mismatches": int((~same_class).sum()),
        "order_mismatches": int((~same_anchor).sum()),
        "max_score_diff": float(dscore.max()) if dscore.size else 0.0,
        "max_box_diff_px": float(dbox.max()) if dbox.size else 0.0,
        "head_rel_l2": heads,
    }


def round_off_check(ours_vs_ref: dict, ours_vs_exact: dict) -> dict:
    """Does our float32 run sit within float32's own reach of the reference?

    ``ours_vs_exact`` (float32 against float64) is how far float32 arithmetic alone moves this network;
    two independent float32 evaluations land up to about sqrt(2) times that apart. The reference passes
    when the detection count is equal and scores, boxes (over detections with the same anchor and
    class), class logits and reordered detections are each within ``ROUND_OFF_FACTOR`` times that.
    """
    bounds = {
        "max_score_diff": ours_vs_exact["max_score_diff"],
        "max_box_diff_px": ours_vs_exact["max_box_diff_px"],
        "order_mismatches": ours_vs_exact["order_mismatches"],
    }
    failed = [k for k, bound in bounds.items() if ours_vs_ref[k] > ROUND_OFF_FACTOR * bound]
    logits = "class_predictions_with_background"
    if ours_vs_ref["head_rel_l2"][logits] > ROUND_OFF_FACTOR * ours_vs_exact["head_rel_l2"][logits]:
        failed.append("class logits")
    if not ours_vs_ref["same_num_detections"]:
        failed.append("num_detections")
    return {"passed": not failed, "failed": failed, "factor": ROUND_OFF_FACTOR}


def measure(name: str, workdir: Path, *, xla: bool = False, sensitivity: bool = False) -> dict:
    checkpoint = workdir / name
    t0 = time.perf_counter()
    write_checkpoint(name, checkpoint)
    result: dict = {"model": name, "checkpoint_s": time.perf_counter() - t0}
    outputs = {}
    for dtype in ("float32", "float64"):
        path = workdir / f"{name}.{dtype}.npz"
        result[dtype] = _child(name, checkpoint, dtype, path)
        with np.load(path) as saved:
            outputs[dtype] = {k: saved[k] for k in saved.files}
        print(f"  {name} {dtype}: {json.dumps(result[dtype])}", file=sys.stderr, flush=True)
    ref = reference(name)
    hw = (480, 640)
    if sensitivity:  # how far one float32 rounding of every weight moves the exact (float64) result
        path = workdir / f"{name}.perturbed.npz"
        result["float64_perturbed"] = _child(name, checkpoint, "float64-perturbed", path)
        with np.load(path) as saved:
            result["ours64_vs_ours64_perturbed"] = compare(outputs["float64"], {k: saved[k] for k in saved.files}, hw)
    if xla:  # a second, independent float32 evaluation: how far apart two float32 implementations land
        path = workdir / f"{name}.xla.npz"
        result["float32_xla"] = _child(name, checkpoint, "float32-xla", path)
        with np.load(path) as saved:
            xla_out = {k: saved[k] for k in saved.files}
        result["ours32xla_vs_ref"] = compare(xla_out, ref, hw)
        result["ours32xla_vs_ours64"] = compare(xla_out, outputs["float64"], hw)
    result["ours32_vs_ref"] = compare(outputs["float32"], ref, hw)
    result["ours64_vs_ref"] = compare(outputs["float64"], ref, hw)
    result["ours32_vs_ours64"] = compare(outputs["float32"], outputs["float64"], hw)
    result["check"] = round_off_check(result["ours32_vs_ref"], result["ours32_vs_ours64"])
    for path in workdir.glob(f"{name}.*.npz"):
        path.unlink()
    for path in sorted(checkpoint.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    checkpoint.rmdir()
    return result


def _commit() -> str | None:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() or None


def markdown(results: list[dict]) -> str:
    """One row per model: the three distances for scores, boxes and class logits, and the costs."""
    rows = [
        "| model | score: ours32−ref | ours64−ref | ours32−ours64 | box px: ours32−ref | ours64−ref "
        "| ours32−ours64 | logits: ours32−ref | ours64−ref | ours32−ours64 | xla32−ref | xla32−ours64 "
        "| reordered (of 100) vs ref: ours32 / ours64 | f32 s | f64 GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    logits = "class_predictions_with_background"
    for r in results:
        a, b, c = r["ours32_vs_ref"], r["ours64_vs_ref"], r["ours32_vs_ours64"]
        f32 = r["float32"]
        xla = [f"{r[k]['head_rel_l2'][logits]:.1e}" if k in r else "—"
               for k in ("ours32xla_vs_ref", "ours32xla_vs_ours64")]
        rows.append(
            f"| {r['model']} | {a['max_score_diff']:.1e} | {b['max_score_diff']:.1e} | {c['max_score_diff']:.1e} "
            f"| {a['max_box_diff_px']:.2f} | {b['max_box_diff_px']:.2f} | {c['max_box_diff_px']:.2f} "
            f"| {a['head_rel_l2'][logits]:.1e} | {b['head_rel_l2'][logits]:.1e} | {c['head_rel_l2'][logits]:.1e} "
            f"| {xla[0]} | {xla[1]} | {a['order_mismatches']} / {b['order_mismatches']} "
            f"| {f32['build_s'] + f32['restore_s'] + f32['run_s']:.0f} | {r['float64']['peak_rss_gb']:.1f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(DEEP_MODELS))
    parser.add_argument("--report", type=Path, nargs="+", help="print the table (and --check) from saved results")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "float64.json")
    parser.add_argument("--xla", action="store_true", help="also run float32 compiled by XLA: a second, "
                        "independent float32 evaluation shows how far apart round-off puts two implementations")
    parser.add_argument("--sensitivity", action="store_true", help="also run float64 with every weight "
                        "perturbed by 2**-24 (relative): how far one float32 rounding per weight moves the result")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every model's float32 detections "
                        "match the reference within the tolerances")
    args = parser.parse_args(argv)
    if args.report:
        results = _merged(args.report)
        print(markdown(results))
        return _check_status(results) if args.check else 0
    unknown = [m for m in args.models if not (FIXTURES / m / "reference.npz").is_file()]
    if unknown:
        print(f"error: no reference in {FIXTURES} for {', '.join(unknown)}", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_float64-") as tmp:
        for name in args.models:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results.append(measure(name, Path(tmp), xla=args.xla, sensitivity=args.sensitivity))
            partial = args.out.with_suffix(".partial.json")
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"results": results}, indent=1))
    import zoo

    environment = {"python": platform.python_version(), "machine": platform.processor() or platform.machine(),
                   "cpus": os.cpu_count(), "zoo": str(Path(zoo.__file__).parent), "commit": _commit()}
    args.out.write_text(json.dumps({"environment": environment, "results": results}, indent=1))
    args.out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(markdown(results))
    return _check_status(results) if args.check else 0


def _merged(paths: list[Path]) -> list[dict]:
    """Results of several runs, one per model (a later file's entry replaces an earlier one)."""
    by_model: dict[str, dict] = {}
    for path in paths:
        for result in json.loads(path.read_text())["results"]:
            result["check"] = round_off_check(result["ours32_vs_ref"], result["ours32_vs_ours64"])
            by_model[result["model"]] = result
    return list(by_model.values())


def _check_status(results: list[dict]) -> int:
    failed = [f"{r['model']} ({', '.join(r['check']['failed'])})" for r in results if not r["check"]["passed"]]
    if failed:
        print(f"further from the reference than float32 round-off explains: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print(f"all {len(results)} models within {ROUND_OFF_FACTOR:g}x float32 round-off of the reference", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(run_model(sys.argv[2], Path(sys.argv[3]), sys.argv[4], Path(sys.argv[5]))))
    else:
        sys.exit(main())
