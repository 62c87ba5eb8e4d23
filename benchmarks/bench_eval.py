"""Time pycocotools against faster-coco-eval on the same large synthetic detections file.

    python3 benchmarks/bench_eval.py [--images 2000] [--objects 7] [--dets-per-image 100] [--repeat 3]

Writes nothing unless ``--out FILE`` is given (a JSON summary). The ground truth holds ``--images``
images of 640x480 with up to ``--objects`` boxes each over the 80 COCO categories; the detections
are every ground-truth box jittered, plus random false positives, up to ``--dets-per-image`` per
image, with random scores. Both evaluators run the full ``zoo.eval.evaluate`` (load results,
evaluate, accumulate, summarize); the statistics must be identical.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo.eval import available_evaluators, evaluate  # noqa: E402
from zoo.eval.evaluate import evaluator_version  # noqa: E402
from zoo.labels import COCO_LABELS  # noqa: E402


def synthetic_problem(images: int, objects: int, dets_per_image: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """Ground truth and detections, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    cat_ids = np.array(sorted(COCO_LABELS))
    gt = {"images": [], "annotations": [], "categories": [{"id": int(i), "name": n} for i, n in COCO_LABELS.items()]}
    dets: list[dict] = []
    for image_id in range(1, images + 1):
        gt["images"].append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": 480, "width": 640})
        n = int(rng.integers(1, objects + 1))
        wh = rng.uniform(8, 300, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([640, 480]) - wh)
        cats = rng.choice(cat_ids, n)
        for k in range(n):
            box = [float(xy[k, 0]), float(xy[k, 1]), float(wh[k, 0]), float(wh[k, 1])]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                      "category_id": int(cats[k]), "bbox": box, "area": box[2] * box[3],
                                      "iscrowd": 0})
            jitter = rng.normal(0, 0.08, 4) * np.array([box[2], box[3], box[2], box[3]])
            dets.append({"image_id": image_id, "category_id": int(cats[k]),
                         "bbox": [float(v) for v in np.maximum(np.array(box) + jitter, [0, 0, 1, 1])],
                         "score": float(rng.uniform(0.3, 1.0))})
        extra = dets_per_image - n
        wh = rng.uniform(8, 300, (extra, 2))
        xy = rng.uniform(0, 1, (extra, 2)) * (np.array([640, 480]) - wh)
        cats = rng.choice(cat_ids, extra)
        scores = rng.uniform(0.0, 0.6, extra)
        for k in range(extra):
            dets.append({"image_id": image_id, "category_id": int(cats[k]),
                         "bbox": [float(xy[k, 0]), float(xy[k, 1]), float(wh[k, 0]), float(wh[k, 1])],
                         "score": float(scores[k])})
    return gt, dets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--objects", type=int, default=7, help="max ground-truth boxes per image")
    parser.add_argument("--dets-per-image", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per evaluator (median reported)")
    parser.add_argument("--out", type=Path, help="write a JSON summary here")
    args = parser.parse_args(argv)

    gt, dets = synthetic_problem(args.images, args.objects, args.dets_per_image)
    print(f"{len(gt['images'])} images, {len(gt['annotations'])} ground-truth boxes, {len(dets)} detections")
    summary: dict = {"images": len(gt["images"]), "ground_truth": len(gt["annotations"]), "detections": len(dets),
                     "evaluators": {}}
    stats = {}
    for name in ("pycocotools", "faster_coco_eval"):
        if name not in available_evaluators():
            print(f"{name}: not installed")
            continue
        walls, inner = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            result = evaluate(gt, dets, evaluator=name)
            walls.append(time.perf_counter() - t0)
            inner.append(result.seconds)
        stats[name] = result.values
        summary["evaluators"][name] = {"version": evaluator_version(name), "wall_s": statistics.median(walls),
                                       "evaluate_s": statistics.median(inner), "AP": result.stats["AP"]}
        print(f"{name} {evaluator_version(name)}: wall {statistics.median(walls):.2f} s "
              f"(evaluate+accumulate+summarize {statistics.median(inner):.2f} s), AP {result.stats['AP']:.4f}")
    if len(stats) == 2:
        same = stats["pycocotools"] == stats["faster_coco_eval"]
        py, fast = (summary["evaluators"][n] for n in ("pycocotools", "faster_coco_eval"))
        ratio_wall = fast["wall_s"] / py["wall_s"]
        ratio_eval = fast["evaluate_s"] / py["evaluate_s"]
        summary.update(identical_statistics=same, ratio_wall=ratio_wall, ratio_evaluate=ratio_eval)
        print(f"identical statistics: {same}; faster/pycocotools time: {ratio_wall:.3f} (wall), "
              f"{ratio_eval:.3f} (evaluation proper); goal <= 0.33")
        if not same:
            print("statistics differ:", stats, file=sys.stderr)
            return 1
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
