"""A small, deterministic COCO-format dataset of coloured shapes on textured backgrounds.

Each image holds 1..``max_objects`` non-overlapping shapes (``circle``, ``square``, ``triangle``).
Every category has its own hue (circles red, squares green, triangles blue, with a little
brightness jitter) and the background is a low-saturation texture, so the dataset is learnable by
a detector and separable by colour. Annotations are exact: the box is the tight box of the drawn
pixels, ``area`` is their count and ``segmentation`` is the shape's polygon.

The same arguments always write byte-identical files.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .. import validate
from ..errors import DatasetError

#: The shapes this generator draws, in default category-id order (ids 1, 2, 3).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

#: Base colour (RGB) of each shape.
SHAPE_COLORS: dict[str, tuple[int, int, int]] = {
    "circle": (220, 40, 40),
    "square": (40, 200, 60),
    "triangle": (50, 70, 230),
}

_CIRCLE_VERTICES = 32


def _resolve_categories(categories: Sequence[str] | Mapping[int, str] | None) -> dict[int, str]:
    """``{id: shape name}`` from a list of names (ids 1..n) or an explicit mapping."""
    if categories is None:
        table = {i + 1: name for i, name in enumerate(SHAPES)}
    elif isinstance(categories, Mapping):
        table = {int(k): str(v) for k, v in categories.items()}
    else:
        table = {i + 1: str(name) for i, name in enumerate(categories)}
    if not table:
        raise DatasetError("categories is empty: give at least one of " + ", ".join(SHAPES))
    for cid, name in table.items():
        if name not in SHAPES:
            raise DatasetError(f"unknown shape category {name!r} (id {cid}); choose from {', '.join(SHAPES)}")
        if cid < 1:
            raise DatasetError(f"category id {cid} for {name!r} must be a positive integer")
    if len(set(table.values())) != len(table):
        raise DatasetError(f"categories name a shape twice: {sorted(table.values())}")
    return dict(sorted(table.items()))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A grey-ish texture: smooth blotches, a gradient, stripes and pixel noise."""
    from PIL import Image

    coarse = rng.uniform(60, 190, size=(max(2, height // 32), max(2, width // 32))).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BILINEAR))[..., None]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    stripes = 12.0 * np.sin((xx * math.cos(angle) + yy * math.sin(angle)) / rng.uniform(4, 12))
    gradient = rng.uniform(-30, 30) * (yy / max(1, height - 1) - 0.5)
    tint = rng.uniform(-8, 8, size=3)  # low saturation: channels stay close together
    noise = rng.normal(0, 10, size=(height, width, 3))
    img = blotches + (stripes + gradient)[..., None] + tint + noise
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    """Vertices (x, y) of a shape of diameter ``size`` centred at (cx, cy)."""
    r = size / 2.0
    if shape == "square":  # axis-aligned
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    count, offset = (_CIRCLE_VERTICES, 0.0) if shape == "circle" else (3, angle)
    return [(cx + r * math.cos(offset + 2 * math.pi * k / count), cy + r * math.sin(offset + 2 * math.pi * k / count))
            for k in range(count)]


def _overlaps(box: tuple[int, int, int, int], placed: list[tuple[int, int, int, int]], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] + gap and b[0] < x1 + gap and y0 < b[3] + gap and b[1] < y1 + gap for b in placed)


def make_shapes_dataset(
    out_dir: str | Path,
    num_images: int,
    *,
    seed: int = 0,
    image_size: int | tuple[int, int] = (256, 256),
    categories: Sequence[str] | Mapping[int, str] | None = None,
    max_objects: int = 4,
) -> Path:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json``; return ``out_dir``.

    ``image_size`` is ``(height, width)`` (or one int for squares). ``categories`` chooses the
    shapes: a list of names (ids 1..n in that order) or a ``{id: name}`` mapping; by default
    ``circle``=1, ``square``=2, ``triangle``=3. Image ids run 1..``num_images``; annotation ids
    1..total. Everything is determined by ``seed``.
    """
    num_images = validate.integer(num_images, "num_images", minimum=0)
    max_objects = validate.integer(max_objects, "max_objects", minimum=1)
    seed = validate.integer(seed, "seed", minimum=0)
    sides = (image_size, image_size) if not isinstance(image_size, (tuple, list)) else tuple(image_size)
    if len(sides) != 2:
        raise DatasetError(f"image_size must be one side or (height, width), got {image_size!r}")
    height, width = (validate.integer(v, "image_size") for v in sides)
    if height < 32 or width < 32:
        raise DatasetError(f"image_size must be at least 32x32, got {height}x{width}")
    table = _resolve_categories(categories)
    from PIL import Image, ImageDraw

    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cat_ids = list(table)
    images: list[dict] = []
    annotations: list[dict] = []
    short = min(height, width)
    for image_id in range(1, int(num_images) + 1):
        pixels = _background(rng, height, width)
        canvas = Image.fromarray(pixels)
        pen = ImageDraw.Draw(canvas)
        placed: list[tuple[int, int, int, int]] = []
        wanted = int(rng.integers(1, int(max_objects) + 1))
        for _ in range(wanted):
            cid = int(cat_ids[int(rng.integers(0, len(cat_ids)))])
            shape = table[cid]
            for _attempt in range(30):
                size = float(rng.uniform(0.14, 0.32) * short)
                cx = float(rng.uniform(size / 2 + 1, width - size / 2 - 1))
                cy = float(rng.uniform(size / 2 + 1, height - size / 2 - 1))
                angle = float(rng.uniform(0, 2 * math.pi))
                jitter = float(rng.uniform(0.8, 1.0))
                poly = _polygon(shape, cx, cy, size, angle)
                mask_img = Image.new("L", (width, height), 0)
                ImageDraw.Draw(mask_img).polygon(poly, fill=255)
                mask = np.asarray(mask_img) > 0
                ys, xs = np.nonzero(mask)
                if ys.size < 16:
                    continue
                box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
                if _overlaps(box, placed, gap=3):
                    continue
                placed.append(box)
                color = tuple(int(c * jitter) for c in SHAPE_COLORS[shape])
                pen.polygon(poly, fill=color)
                annotations.append({
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cid,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "area": float(ys.size),
                    "iscrowd": 0,
                    "segmentation": [[round(v, 2) for xy in poly for v in xy]],
                })
                break
        file_name = f"{image_id:06d}.png"
        canvas.save(images_dir / file_name, format="PNG")
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    data = {
        "info": {"description": "odzoo synthetic shapes", "version": "1", "seed": int(seed)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in table.items()],
    }
    (out / "annotations.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return out
