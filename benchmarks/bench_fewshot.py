"""Few-shot fine-tuning, end to end and offline: teach the embedded ``demo_shapes`` detector a shape
it has never seen from five images.

    ODZOO_OFFLINE=1 python3 benchmarks/bench_fewshot.py [--config STEPS:LR:TRAINABLE[:RECAL] ...]
        [--train-images 5] [--test-images 60] [--batch-size 5] [--seed 0] [--out FILE]

The new class is a yellow five-pointed star, drawn by this script over images of
``zoo.datasets.synthetic.make_shapes_dataset`` (their circles, squares and triangles, the classes
the demo model knows, stay in the pictures as unannotated distractors). Training and held-out
images come from different seeds; everything is deterministic.

For each ``--config`` the script fine-tunes ``demo_shapes`` with ``zoo.finetune`` into a one-class
(``star``) detector on the training images and reports the COCO AP@0.5 of ``star`` on the held-out
images, before (the freshly initialised one-class head, loaded the way ``zoo.finetune`` loads it)
and after, with the wall time of the ``zoo.finetune`` call (model load, training, BatchNorm
re-estimation). ``--out`` writes a JSON summary with the environment fingerprint.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo  # noqa: E402
from zoo.datasets.coco import CocoDataset  # noqa: E402
from zoo.datasets.synthetic import make_shapes_dataset  # noqa: E402
from zoo.fine_tuning import evaluate_detector  # noqa: E402

MODEL = "demo_shapes"
NEW_CLASS = "star"
STAR_COLOR = (235, 200, 30)
GOAL_AP50 = 0.8
#: The configurations compared by default: full fine-tuning and heads only, at several learning rates
#: and lengths (``STEPS:LR:TRAINABLE[:BATCHNORM_RE-ESTIMATION_BATCHES]``).
DEFAULT_CONFIGS = ("15:0.003:all", "30:0.001:all", "30:0.003:all:5", "30:0.01:all", "30:0.01:all:5",
                   "60:0.01:heads", "120:0.01:heads", "30:0.03:heads", "60:0.03:heads", "40:0.05:heads")


def _star(cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """A five-pointed star of outer diameter ``size``: ten vertices, inner radius 0.45 of the outer."""
    outer, inner = size / 2.0, 0.45 * size / 2.0
    return [(cx + (outer if k % 2 == 0 else inner) * math.cos(angle + math.pi * k / 5),
             cy + (outer if k % 2 == 0 else inner) * math.sin(angle + math.pi * k / 5)) for k in range(10)]


def _clear(box: tuple[int, int, int, int], taken: list[tuple[float, float, float, float]], gap: int = 3) -> bool:
    x0, y0, x1, y1 = box
    return not any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in taken)


def make_star_dataset(out: Path, num_images: int, seed: int) -> CocoDataset:
    """``num_images`` 256x256 images, each with 1-2 annotated stars beside 1-3 unannotated known shapes."""
    from PIL import Image, ImageDraw

    base = make_shapes_dataset(out / "base", num_images, seed=seed, image_size=256, max_objects=3)
    source = json.loads((base / "annotations.json").read_text(encoding="utf-8"))
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for a in source["annotations"]:
        x, y, w, h = a["bbox"]
        boxes.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    rng = np.random.default_rng(10_000 + seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    annotations: list[dict] = []
    for info in source["images"]:
        canvas = Image.open(base / "images" / info["file_name"]).convert("RGB")
        taken = list(boxes.get(info["id"], []))
        wanted = int(rng.integers(1, 3))
        placed = 0
        for _attempt in range(200):
            if placed == wanted:
                break
            size = float(rng.uniform(0.16, 0.34) * 256)
            cx, cy = (float(rng.uniform(size / 2 + 1, 256 - size / 2 - 1)) for _ in range(2))
            poly = _star(cx, cy, size, float(rng.uniform(0, 2 * math.pi)))
            mask_img = Image.new("L", canvas.size, 0)
            ImageDraw.Draw(mask_img).polygon(poly, fill=255)
            ys, xs = np.nonzero(np.asarray(mask_img))
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            if not _clear(box, taken):
                continue
            jitter = float(rng.uniform(0.8, 1.0))
            ImageDraw.Draw(canvas).polygon(poly, fill=tuple(int(c * jitter) for c in STAR_COLOR))
            taken.append(box)
            placed += 1
            annotations.append({"id": len(annotations) + 1, "image_id": info["id"], "category_id": 1,
                                "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                                "area": float(ys.size), "iscrowd": 0,
                                "segmentation": [[round(v, 2) for xy in poly for v in xy]]})
        if placed == 0:
            raise RuntimeError(f"no room for a star in image {info['id']} (seed {seed})")
        canvas.save(out / "images" / info["file_name"], format="PNG")
    data = {"info": {"description": "stars over odzoo synthetic shapes", "seed": seed}, "images": source["images"],
            "annotations": annotations, "categories": [{"id": 1, "name": NEW_CLASS, "supercategory": "shape"}]}
    (out / "annotations.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return CocoDataset(out / "annotations.json", out / "images")


def parse_config(text: str) -> dict:
    """``STEPS:LR:TRAINABLE[:RECALIBRATE]`` -> keyword arguments of ``zoo.finetune``."""
    parts = text.split(":")
    try:
        if len(parts) not in (3, 4):
            raise ValueError(text)
        config = {"steps": int(parts[0]), "learning_rate": float(parts[1]), "trainable": parts[2],
                  "recalibrate_batches": int(parts[3]) if len(parts) == 4 else 25}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--config wants STEPS:LR:TRAINABLE[:RECALIBRATE_BATCHES] (e.g. 30:0.003:all), got {text!r}") from None
    if config["steps"] < 1 or config["learning_rate"] <= 0 or config["trainable"] not in ("all", "heads") \
            or config["recalibrate_batches"] < 0:
        raise argparse.ArgumentTypeError(f"--config {text!r}: steps >= 1, learning rate > 0, trainable all|heads, "
                                         "recalibration batches >= 0")
    return config


def object_count(dataset: CocoDataset) -> int:
    return sum(len(dataset.annotations(i)) for i in dataset.image_ids)


def ap50(detector, dataset: CocoDataset) -> float:
    return float(evaluate_detector(detector, dataset).stats["AP50"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=parse_config, action="append", metavar="STEPS:LR:TRAINABLE[:RECAL]",
                   help="a fine-tuning configuration; repeat to compare (default: " + " ".join(DEFAULT_CONFIGS) + ")")
    p.add_argument("--train-images", type=int, default=5)
    p.add_argument("--test-images", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the JSON summary here")
    args = p.parse_args(argv)
    configs = args.config or [parse_config(c) for c in DEFAULT_CONFIGS]

    import keras

    with tempfile.TemporaryDirectory(prefix="odzoo-fewshot-") as tmp:
        train = make_star_dataset(Path(tmp) / "train", args.train_images, seed=1000 + args.seed)
        test = make_star_dataset(Path(tmp) / "test", args.test_images, seed=2000 + args.seed)
        print(f"{len(train)} training images ({object_count(train)} stars), "
              f"{len(test)} held-out images ({object_count(test)} stars)", flush=True)

        keras.utils.set_random_seed(args.seed)
        untrained = zoo.load(MODEL, num_classes=1, label_map={1: NEW_CLASS}, progress=False)
        before = ap50(untrained, test)
        del untrained
        print(f"before: AP@0.5 {before:.3f} (untrained one-class head)", flush=True)

        runs = []
        for config in configs:
            start = time.perf_counter()
            det = zoo.finetune(MODEL, train, num_classes=1, batch_size=args.batch_size, seed=args.seed,
                               progress=False, **config)
            wall = time.perf_counter() - start
            after = ap50(det, test)
            result = det.finetune_result
            runs.append({**config, "batch_size": args.batch_size, "ap50_after": round(after, 4),
                         "wall_seconds": round(wall, 1), "train_seconds": round(result.seconds, 1),
                         "final_loss": round(float(result.final_loss), 4)})
            print(f"{config['steps']} steps, lr {config['learning_rate']}, trainable={config['trainable']}, "
                  f"{config['recalibrate_batches']} BatchNorm re-estimation batches: "
                  f"AP@0.5 {after:.3f} after {wall:.1f} s (training {result.seconds:.1f} s)", flush=True)
            del det

    best = max(runs, key=lambda r: (r["ap50_after"], -r["wall_seconds"]))
    reaching = [r for r in runs if r["ap50_after"] >= GOAL_AP50]
    fastest = min(reaching, key=lambda r: r["wall_seconds"]) if reaching else None
    doc = {"model": MODEL, "new_class": NEW_CLASS, "train_images": args.train_images,
           "train_objects": object_count(train), "test_images": args.test_images,
           "test_objects": object_count(test), "seed": args.seed, "ap50_before": round(before, 4),
           "goal_ap50": GOAL_AP50,
           "best": best, "fastest_reaching_goal": fastest, "runs": runs}
    try:
        from zoo.bench.env import fingerprint

        doc["environment"] = fingerprint()
    except Exception as exc:  # the figures stand without it
        doc["environment"] = {"error": str(exc)}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"best: {best['steps']} steps, lr {best['learning_rate']}, trainable={best['trainable']}: "
          f"AP@0.5 {before:.3f} -> {best['ap50_after']:.3f} in {best['wall_seconds']:.1f} s")
    if fastest is not None:
        print(f"fastest to AP@0.5 >= {GOAL_AP50}: {fastest['steps']} steps, lr {fastest['learning_rate']}, "
              f"trainable={fastest['trainable']}: {fastest['ap50_after']:.3f} in {fastest['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
