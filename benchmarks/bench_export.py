#!/usr/bin/env python3
"""Export benchmark: the exported TFLite model against the Keras model it came from, same run.

    python3 benchmarks/bench_export.py [--repeats 20] [--models NAME...] [--quantize none float16 ...]
                                       [--out benchmarks/results/export.json]

Models: the two stand-in archives (ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8,
centernet_mobilenetv2fpn_512x512_coco17_od), loaded from ../shared/fixtures/tarballs into a
temporary cache. For each, every requested TFLite variant is exported with ``zoo.export`` (export
time recorded), loaded with ``backend="tflite"``, and then per round the Keras backend and each
TFLite variant run ``detect()`` on the 480x640 reference image in turn (batch 1, CPU), so machine
load hits all alike. Reported: median latency per variant, the ratio tflite / keras (goal for float:
<= 0.7), and each variant's agreement with the Keras detections (zoo.exporting.measure_agreement).

Accuracy of the quantizations (``--accuracy-images N``, 0 to skip): the embedded ``demo_shapes``
detector (a trained CenterNet) exported in every requested quantization, each variant's COCO box
mAP on N held-out synthetic shapes images (``make_shapes_dataset`` seed 2, as its registry figure),
next to the Keras model's, and each quantized variant's agreement with the float32 export on the
first 20 of those images. int8 is calibrated on 20 images of another seed.
Prints a summary and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

FIXTURES = ROOT.parent / "shared" / "fixtures"
MODELS = ("ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8", "centernet_mobilenetv2fpn_512x512_coco17_od")
GOAL_FLOAT_RATIO = 0.7


def bench_model(name: str, quantizations: list[str], repeats: int, work: Path, threads: int | None) -> dict:
    import numpy as np
    from PIL import Image

    import zoo
    from zoo.backends.tflite_backend import TFLiteBackend
    from zoo.detector import Detector
    from zoo.exporting import measure_agreement
    from zoo.loading import load

    image = np.asarray(Image.open(FIXTURES / "inputs" / "A.png").convert("RGB"))
    keras_det = load(str(FIXTURES / "tarballs" / f"{name}.tar.gz"), cache_dir=work / "cache")
    variants = {"keras": keras_det}
    export_s = {}
    calibration = work / "calibration"
    calibration.mkdir(exist_ok=True)
    Image.fromarray(image).save(calibration / "a.png")
    Image.fromarray(image[::-1]).save(calibration / "b.png")
    for quantize in quantizations:
        t0 = time.perf_counter()
        result = zoo.export(keras_det, "tflite", quantize=quantize, out=work / f"{name}-{quantize}",
                            calibration=calibration if quantize == "int8" else None)
        export_s[quantize] = time.perf_counter() - t0
        lite = load(result.folder, backend="tflite")
        if threads:
            lite = Detector(TFLiteBackend(result.folder, num_threads=threads), label_map=lite.label_map)
        variants[f"tflite_{quantize}"] = lite
    for det in variants.values():  # warm-up: traces, interpreter allocation
        det.detect(image)
        det.detect(image)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for key, det in variants.items():
            t0 = time.perf_counter()
            det.detect(image)
            times[key].append((time.perf_counter() - t0) * 1000.0)
    median = {k: statistics.median(v) for k, v in times.items()}
    record = {
        "model": name,
        "median_ms": median,
        "p90_ms": {k: sorted(v)[int(0.9 * (len(v) - 1))] for k, v in times.items()},
        "ratio_to_keras": {k: median[k] / median["keras"] for k in median if k != "keras"},
        "export_s": export_s,
        "agreement": {k: measure_agreement(keras_det, det, [image]) for k, det in variants.items() if k != "keras"},
    }
    if "tflite_none" in record["ratio_to_keras"]:
        record["float_goal_met"] = record["ratio_to_keras"]["tflite_none"] <= GOAL_FLOAT_RATIO
    return record


ACCURACY_MODEL = "demo_shapes"
#: the held-out seed of demo_shapes' registry mAP, and a different one for int8 calibration
ACCURACY_SEED, CALIBRATION_SEED = 2, 7
AGREEMENT_IMAGES = 20


def bench_accuracy(quantizations: list[str], num_images: int, work: Path) -> dict:
    """mAP of the Keras model and of each TFLite variant on shapes images; agreement with float."""
    import numpy as np
    from PIL import Image

    import zoo
    from zoo.datasets import CocoDataset, make_shapes_dataset
    from zoo.exporting import measure_agreement
    from zoo.fine_tuning import evaluate_detector

    root = make_shapes_dataset(work / "shapes", num_images, seed=ACCURACY_SEED)
    dataset = CocoDataset(root / "annotations.json", root / "images")
    calibration = make_shapes_dataset(work / "calibration_shapes", AGREEMENT_IMAGES, seed=CALIBRATION_SEED) / "images"
    images = [np.asarray(Image.open(path).convert("RGB"))
              for path in sorted((root / "images").iterdir())[:AGREEMENT_IMAGES]]
    keras_det = zoo.load(ACCURACY_MODEL)
    variants = {"keras": keras_det}
    for quantize in dict.fromkeys(["none", *quantizations]):  # float first: the others are compared with it
        result = zoo.export(keras_det, "tflite", quantize=quantize, out=work / f"{ACCURACY_MODEL}-{quantize}",
                            calibration=calibration if quantize == "int8" else None)
        variants[f"tflite_{quantize}"] = zoo.load(result.folder)
    record: dict = {"model": ACCURACY_MODEL, "images": num_images, "dataset_seed": ACCURACY_SEED,
                    "agreement_images": len(images), "variants": {}}
    for key, det in variants.items():
        stats = evaluate_detector(det, dataset).stats
        entry = {"map": 100.0 * stats["AP"], "ap50": 100.0 * stats["AP50"]}
        if key != "keras":
            entry["agreement_with_keras"] = measure_agreement(keras_det, det, images)
        if key not in ("keras", "tflite_none"):
            entry["agreement_with_float"] = measure_agreement(variants["tflite_none"], det, images)
        record["variants"][key] = entry
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--quantize", nargs="+", default=["none", "float16", "dynamic", "int8"],
                        choices=("none", "float16", "dynamic", "int8"))
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both TensorFlow and the interpreter (default: every core)")
    parser.add_argument("--accuracy-images", type=int, default=100,
                        help="shapes images for the mAP of each quantization of demo_shapes (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export.json")
    args = parser.parse_args(argv)
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        for name in args.models:
            record = bench_model(name, list(args.quantize), args.repeats, Path(tmp), args.threads)
            results.append(record)
            print(f"\n{name}")
            for key, ms in record["median_ms"].items():
                ratio = record["ratio_to_keras"].get(key)
                agreement = record["agreement"].get(key)
                extra = ""
                if ratio is not None:
                    extra = (f"  x{ratio:.2f} of keras  matched={agreement['matched']:.2f} "
                             f"max_box_px={agreement['max_box_px']} parity={agreement['parity']}")
                print(f"  {key:<16} median {ms:8.1f} ms{extra}")
        accuracy = None
        if args.accuracy_images > 0:
            accuracy = bench_accuracy(list(args.quantize), args.accuracy_images, Path(tmp))
            print(f"\n{accuracy['model']}: box mAP on {accuracy['images']} shapes images; agreement on "
                  f"{accuracy['agreement_images']}")
            for key, entry in accuracy["variants"].items():
                agreement = entry.get("agreement_with_float") or entry.get("agreement_with_keras")
                extra = "" if agreement is None else (
                    f"  vs {'float' if 'agreement_with_float' in entry else 'keras'}: matched={agreement['matched']:.2f} "
                    f"max_box_px={agreement['max_box_px']} max_score_rel={agreement['max_score_rel']}")
                print(f"  {key:<16} mAP {entry['map']:5.1f}  AP50 {entry['ap50']:5.1f}{extra}")
    doc = {
        "goal": f"tflite float median latency <= {GOAL_FLOAT_RATIO} x keras (CPU, batch 1)",
        "env": {"python": platform.python_version(), "tensorflow": tf.__version__, "cpus": os.cpu_count(),
                "machine": platform.machine(), "load_avg": os.getloadavg()},
        "repeats": args.repeats,
        "threads": args.threads or os.cpu_count(),
        "results": results,
        "accuracy": accuracy,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=float) + "\n", encoding="utf-8")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
