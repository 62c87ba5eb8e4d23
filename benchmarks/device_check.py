#!/usr/bin/env python3
"""Keras backend against the exported SavedModel on an accelerator (or the CPU), several settings.

    python3 benchmarks/device_check.py [--out DIR] [--models NAME...] [--shared ../shared]
                                       [--budget-s 540] [--dry-run]

For each model (default: the two stand-in archives of ``../shared`` and the bundled ``demo_shapes``)
and each backend it measures the load time, the first call, and the median latency at batch 1 and 8;
for the keras backend also with XLA (``jit_compile``) and with ``precision="float16"`` (and their
combination), each with the agreement of its detections with float32's on the reference image
(:func:`zoo.agreement.detection_agreement`). Writes ``DIR/device_check.json`` and
``DIR/device_check.md``. A model or setting that fails is recorded with its error; the others still
run. Settings still waiting when ``--budget-s`` runs out are recorded as skipped for lack of time.

``--dry-run`` checks the whole script quickly on the CPU: the ``demo_shapes`` model only, batch 1
and 2, two timed calls per setting.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STAND_INS = ("centernet_mobilenetv2fpn_512x512_coco17_od", "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8")
BUNDLED = "demo_shapes"


def _sources(models: list[str], shared: Path) -> dict[str, str | None]:
    """Model name -> archive path (None when it is not on this machine)."""
    out: dict[str, str | None] = {}
    for name in models:
        if name == BUNDLED:
            out[name] = str(ROOT / "zoo" / "assets" / "demo_shapes.tar.gz")
        else:
            archive = shared / "fixtures" / "tarballs" / f"{name}.tar.gz"
            out[name] = str(archive) if archive.is_file() else None
    return out


def _image(shared: Path) -> Any:
    import numpy as np

    path = shared / "fixtures" / "inputs" / "A.png"
    if path.is_file():
        from zoo.images import load_image

        return load_image(path)
    rng = np.random.default_rng(0)  # no ../shared here: a fixed synthetic picture
    return rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _settings(backend: str, dry_run: bool) -> list[dict[str, Any]]:
    if backend != "keras":
        return [{"jit_compile": False, "precision": "float32"}]
    if dry_run:  # every code path once; XLA compiles slowly on a CPU, so once only
        return [{"jit_compile": False, "precision": "float32"}, {"jit_compile": False, "precision": "float16"},
                {"jit_compile": True, "precision": "float32"}]
    return [{"jit_compile": jit, "precision": p} for p in ("float32", "float16") for jit in (False, True)]


def _check_model(name: str, source: str, image: Any, args: argparse.Namespace, deadline: float) -> list[dict]:
    import numpy as np

    from zoo.backends.keras_backend import KerasBackend
    from zoo.agreement import detection_agreement
    from zoo.loading import load

    rows: list[dict] = []
    batches = (1, 2) if args.dry_run else (1, 8)
    repeats = 2 if args.dry_run else args.repeats
    reference: dict | None = None
    for backend in ("keras", "saved_model"):
        t0 = time.perf_counter()
        try:
            det = load(source, backend=backend, cache_dir=args.cache)
        except Exception as exc:  # recorded, the other runs go on
            rows.append({"model": name, "backend": backend, "error": f"load: {type(exc).__name__}: {exc}"})
            continue
        load_s = time.perf_counter() - t0
        for setting in _settings(backend, args.dry_run):
            row = {"model": name, "backend": backend, **setting, "load_s": load_s}
            rows.append(row)
            if time.perf_counter() > deadline:
                row["skipped"] = "time budget spent"
                continue
            try:
                runner = det.runner if backend != "keras" else KerasBackend(det.net, **setting)
                t1 = time.perf_counter()
                out = runner.infer(image[np.newaxis])
                row["first_call_s"] = time.perf_counter() - t1
                if backend == "keras" and getattr(runner, "jit_fallback_reason", None):
                    row["jit_fallback_reason"] = runner.jit_fallback_reason
                if reference is None:
                    reference = out
                row["agreement_with_keras_float32"] = detection_agreement(reference, out)
                for b in batches if not (args.dry_run and setting["jit_compile"]) else batches[:1]:
                    batch = np.stack([image] * b)
                    if b > 1 and not getattr(runner, "supports_batch", False):
                        row[f"batch{b}_ms"] = None
                        row[f"batch{b}_note"] = "takes one image per call"
                        continue
                    runner.infer(batch)  # warm-up (a new batch size may retrace)
                    row[f"batch{b}_ms"] = _median_ms(lambda: runner.infer(batch), repeats)
                    row[f"batch{b}_images_per_s"] = b / (row[f"batch{b}_ms"] / 1e3)
            except Exception as exc:  # recorded, the other runs go on
                row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return rows


def _markdown(report: dict) -> str:
    lines = [
        f"# Device check ({'CPU dry run' if report['dry_run'] else 'full run'})",
        "",
        f"Devices: {report['devices']}; TensorFlow {report['tensorflow']}; {report['elapsed_s']:.0f} s.",
        "",
        "| model | backend | XLA | precision | load s | first call s | batch 1 ms | batch N img/s | agreement | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        big = [k for k in r if k.startswith("batch") and k.endswith("_images_per_s") and not k.startswith("batch1_")]
        agree = r.get("agreement_with_keras_float32") or {}
        note = r.get("error") or r.get("skipped") or r.get("jit_fallback_reason") or ""
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        lines.append(
            f"| {r['model']} | {r['backend']} | {'on' if r.get('jit_compile') else 'off'} | {r.get('precision', '')} "
            f"| {fmt(r.get('load_s'), '.2f')} | {fmt(r.get('first_call_s'), '.2f')} | {fmt(r.get('batch1_ms'), '.1f')} "
            f"| {fmt(r.get(big[0]) if big else None, '.1f')} | {fmt(agree.get('matched'), '.2f')} | {note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "device_check")
    parser.add_argument("--models", nargs="+", default=None, help=f"default: {', '.join((*STAND_INS, BUNDLED))}")
    parser.add_argument("--shared", type=Path, default=ROOT / ".." / "shared")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per setting (median kept)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="stop starting new settings after this")
    parser.add_argument("--dry-run", action="store_true", help="CPU, demo_shapes only, tiny repeats")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.budget_s <= 0:
        parser.error("--repeats must be >= 1 and --budget-s > 0")
    started = time.perf_counter()
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import tensorflow as tf

    models = args.models or ([BUNDLED] if args.dry_run else [*STAND_INS, BUNDLED])
    shared = args.shared.resolve()
    image = _image(shared)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="odzoo-device-check-") as tmp:
        args.cache = Path(tmp)
        for name, source in _sources(models, shared).items():
            if source is None:
                rows.append({"model": name, "error": f"archive not found under {shared}/fixtures/tarballs"})
                continue
            rows.extend(_check_model(name, source, image, args, started + args.budget_s))
    report = {
        "dry_run": bool(args.dry_run),
        "devices": [d.name for d in tf.config.list_logical_devices() if d.device_type != "CPU"] or ["CPU only"],
        "tensorflow": tf.__version__,
        "elapsed_s": time.perf_counter() - started,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_check.json").write_text(json.dumps(report, indent=2))
    (args.out / "device_check.md").write_text(_markdown(report))
    print(_markdown(report))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
