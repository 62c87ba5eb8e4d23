"""A shape the demo detectors have never seen: yellow five-pointed stars drawn over
:func:`~zoo.datasets.synthetic.make_shapes_dataset` images, for few-shot fine-tuning.

The circles, squares and triangles of the underlying images stay in the pictures, unannotated, as
distractors; only the stars (category ``star``, id 1) are annotated. Everything is determined by
``seed``::

    python -m zoo.datasets.stars five --images 5 --seed 1000
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import DatasetError, ZooError
from .synthetic import make_shapes_dataset

__all__ = ["STAR", "STAR_COLOR", "make_star_dataset", "star_polygon"]

STAR = "star"
STAR_COLOR = (235, 200, 30)
_SIDE = 256


def star_polygon(cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """A five-pointed star of outer diameter ``size``: ten vertices, inner radius 0.45 of the outer."""
    outer, inner = size / 2.0, 0.45 * size / 2.0
    return [(cx + (outer if k % 2 == 0 else inner) * math.cos(angle + math.pi * k / 5),
             cy + (outer if k % 2 == 0 else inner) * math.sin(angle + math.pi * k / 5)) for k in range(10)]


def _clear(box: tuple[int, int, int, int], taken: list[tuple[float, float, float, float]], gap: int = 3) -> bool:
    x0, y0, x1, y1 = box
    return not any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in taken)


def make_star_dataset(out_dir: str | Path, num_images: int, *, seed: int = 0) -> Path:
    """Write ``out_dir/images/*.png`` (256x256, each with 1-2 annotated stars beside 1-3 unannotated
    known shapes) and ``out_dir/annotations.json``; return ``out_dir``."""
    from PIL import Image, ImageDraw

    num_images = validate.integer(num_images, "num_images", minimum=1)
    seed = validate.integer(seed, "seed", minimum=0)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; give a folder for the star images")
    with tempfile.TemporaryDirectory(prefix="odzoo-stars-") as tmp:
        base = make_shapes_dataset(Path(tmp), num_images, seed=seed, image_size=_SIDE, max_objects=3)
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
                size = float(rng.uniform(0.16, 0.34) * _SIDE)
                cx, cy = (float(rng.uniform(size / 2 + 1, _SIDE - size / 2 - 1)) for _ in range(2))
                poly = star_polygon(cx, cy, size, float(rng.uniform(0, 2 * math.pi)))
                mask = Image.new("L", canvas.size, 0)
                ImageDraw.Draw(mask).polygon(poly, fill=255)
                ys, xs = np.nonzero(np.asarray(mask))
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                if not _clear(box, taken):
                    continue
                jitter = float(rng.uniform(0.8, 1.0))
                ImageDraw.Draw(canvas).polygon(poly, fill=tuple(int(c * jitter) for c in STAR_COLOR))
                taken.append(box)
                placed += 1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": info["id"], "category_id": 1,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "area": float(ys.size), "iscrowd": 0, "segmentation": [[round(v, 2) for xy in poly for v in xy]]})
            if placed == 0:
                raise DatasetError(f"no room for a star in image {info['id']} (seed {seed}); try another seed")
            canvas.save(out / "images" / info["file_name"], format="PNG")
    data = {"info": {"description": "stars over odzoo synthetic shapes", "seed": seed}, "images": source["images"],
            "annotations": annotations, "categories": [{"id": 1, "name": STAR, "supercategory": "shape"}]}
    (out / "annotations.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m zoo.datasets.stars OUT [--images N] [--seed S]``."""
    p = argparse.ArgumentParser(prog="python -m zoo.datasets.stars", description=__doc__.split("\n\n")[0])
    p.add_argument("out", help="output folder (images/ and annotations.json)")
    p.add_argument("--images", type=int, default=5, help="number of images (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    try:
        out = make_star_dataset(args.out, args.images, seed=args.seed)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stars = len(json.loads((out / "annotations.json").read_text(encoding="utf-8"))["annotations"])
    print(f"wrote {args.images} images with {stars} stars to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
