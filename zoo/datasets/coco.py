"""Read any COCO-format detection dataset: an annotations JSON file plus a folder of images."""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from .json_file import read_json

_REQUIRED_IMAGE_KEYS = ("id", "file_name")
_REQUIRED_ANN_KEYS = ("image_id", "category_id", "bbox")


def _load_json(path: Path) -> dict:
    return read_json(path, what="COCO annotations file", expect=dict,
                     hint="pass a COCO instances JSON file (an object with images, annotations, categories)")


# ----------------------------------------------------------------------------- record checks
def is_number(value: Any) -> bool:
    """A finite real number (Python or NumPy), not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def is_integer(value: Any) -> bool:
    """A whole number (Python or NumPy integer), not a boolean."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def id_kind(value: Any) -> str | None:
    """``"integer"`` or ``"string"`` for a usable image id, None otherwise."""
    if is_integer(value):
        return "integer"
    if isinstance(value, str) and value:
        return "string"
    return None


def check_box(box: Any, where: str) -> None:
    """``[x, y, width, height]``: four finite numbers, width and height not negative."""
    if not (isinstance(box, list) and len(box) == 4 and all(is_number(v) for v in box)):
        raise DatasetError(f"{where}.bbox must be [x, y, width, height] (4 finite numbers), got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise DatasetError(f"{where}.bbox has a negative width or height: {box!r}")


def check_keypoints(keypoints: Any, where: str) -> None:
    """``[x, y, v] * K``: finite numbers, a multiple of three."""
    if not (isinstance(keypoints, list) and len(keypoints) % 3 == 0 and all(is_number(v) for v in keypoints)):
        raise DatasetError(f"{where}.keypoints must be a list of [x, y, visibility] triples (finite numbers)")


def _validate(data: dict, source: str) -> None:
    """Check the structure of COCO ground truth; the first problem is named by list, index and field."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f"{source}: missing or malformed {key!r} list (COCO format needs images, annotations, categories)")
    first_kind: tuple[int, str] | None = None
    image_ids: set[Any] = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or any(k not in img for k in _REQUIRED_IMAGE_KEYS):
            raise DatasetError(f"{source}: images[{i}] lacks one of {_REQUIRED_IMAGE_KEYS}")
        kind = id_kind(img["id"])
        if kind is None:
            raise DatasetError(
                f"{source}: images[{i}].id must be an integer (or a non-empty string), got {img['id']!r}")
        if first_kind is None:
            first_kind = (i, kind)
        elif kind != first_kind[1]:
            raise DatasetError(
                f"{source}: images[{i}].id is {'an' if kind == 'integer' else 'a'} {kind} ({img['id']!r}) but "
                f"images[{first_kind[0]}].id is {'an' if first_kind[1] == 'integer' else 'a'} {first_kind[1]}; "
                "image ids must all be integers (as in COCO) or all strings")
        if img["id"] in image_ids:
            raise DatasetError(f"{source}: images[{i}].id {img['id']!r} is used twice; image ids must be unique")
        image_ids.add(img["id"])
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise DatasetError(f"{source}: images[{i}].file_name must be a non-empty string, got {img['file_name']!r}")
        for key in ("height", "width"):
            if key in img and not (is_integer(img[key]) and img[key] > 0):
                raise DatasetError(f"{source}: images[{i}].{key} must be a positive integer, got {img[key]!r}")
    cat_ids: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{source}: categories[{i}] lacks 'id' or 'name'")
        if not is_integer(cat["id"]):
            raise DatasetError(f"{source}: categories[{i}].id must be an integer, got {cat['id']!r}")
        if cat["id"] in cat_ids:
            raise DatasetError(f"{source}: categories[{i}].id {cat['id']} is used twice; category ids must be unique")
        cat_ids.add(cat["id"])
        if not isinstance(cat["name"], str) or not cat["name"]:
            raise DatasetError(f"{source}: categories[{i}].name must be a non-empty string, got {cat['name']!r}")
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, dict) or any(k not in ann for k in _REQUIRED_ANN_KEYS):
            raise DatasetError(f"{where} lacks one of {_REQUIRED_ANN_KEYS}")
        check_box(ann["bbox"], where)
        if ann["image_id"] not in image_ids or id_kind(ann["image_id"]) != (first_kind and first_kind[1]):
            raise DatasetError(f"{where} refers to unknown image_id {ann['image_id']!r}")
        if not is_integer(ann["category_id"]) or ann["category_id"] not in cat_ids:
            raise DatasetError(f"{where} refers to unknown category_id {ann['category_id']!r}")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            raise DatasetError(f"{where}.iscrowd must be 0 or 1, got {ann['iscrowd']!r}")
        if "area" in ann and not (is_number(ann["area"]) and ann["area"] >= 0):
            raise DatasetError(f"{where}.area must be a non-negative number, got {ann['area']!r}")
        if "keypoints" in ann:
            check_keypoints(ann["keypoints"], where)


class CocoDataset:
    """A COCO-format dataset.

    Iterating yields ``(image_id, image, annotations)`` with ``image`` an ``HxWx3`` uint8 array and
    ``annotations`` the list of COCO annotation dicts of that image (``bbox`` absolute xywh).
    Images are read lazily, in ascending image-id order.
    """

    def __init__(self, annotations_path: str | Path, images_dir: str | Path, *, _data: dict | None = None) -> None:
        self.annotations_path = Path(annotations_path)
        self.images_dir = Path(images_dir)
        data = _load_json(self.annotations_path) if _data is None else _data
        _validate(data, str(self.annotations_path))
        if not self.images_dir.is_dir():
            raise DatasetError(
                f"COCO images folder not found: {self.images_dir}; pass the folder holding the image files")
        self._data = data
        self._images = {img["id"]: img for img in data["images"]}
        self._by_image: dict[Any, list[dict]] = {img_id: [] for img_id in self._images}
        for ann in data["annotations"]:
            self._by_image[ann["image_id"]].append(ann)
        self._ids = sorted(self._images)

    # ----------------------------------------------------------------- construction helpers
    @classmethod
    def from_coco_dir(cls, coco_dir: str | Path, split: str = "val2017") -> CocoDataset:
        """The official layout: ``coco_dir/annotations/instances_<split>.json`` and ``coco_dir/<split>/``."""
        root = Path(coco_dir)
        return cls(root / "annotations" / f"instances_{split}.json", root / split)

    # ----------------------------------------------------------------- views
    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[tuple[Any, np.ndarray, list[dict]]]:
        for image_id in self._ids:
            yield image_id, self.load_image(image_id), self.annotations(image_id)

    def __repr__(self) -> str:
        return f"CocoDataset({self.annotations_path}, images={len(self)}, categories={len(self.categories)})"

    @property
    def image_ids(self) -> list:
        """Image ids in iteration order (ascending)."""
        return list(self._ids)

    @property
    def categories(self) -> dict[int, str]:
        """``{category_id: name}`` in ascending id order."""
        return {int(c["id"]): str(c["name"]) for c in sorted(self._data["categories"], key=lambda c: c["id"])}

    @property
    def category_records(self) -> list[dict]:
        """The raw ``categories`` entries (with ``keypoints`` / ``skeleton`` where present)."""
        return [dict(c) for c in self._data["categories"]]

    def image_info(self, image_id: Any) -> dict:
        """The ``images`` entry of ``image_id``."""
        try:
            return dict(self._images[image_id])
        except KeyError:
            raise DatasetError(f"image id {image_id!r} is not in {self.annotations_path}") from None

    def annotations(self, image_id: Any) -> list[dict]:
        """The annotations of ``image_id`` (copies)."""
        if image_id not in self._by_image:
            raise DatasetError(f"image id {image_id!r} is not in {self.annotations_path}")
        return [dict(a) for a in self._by_image[image_id]]

    def image_path(self, image_id: Any) -> Path:
        """Path of the file of ``image_id``."""
        return self.images_dir / self.image_info(image_id)["file_name"]

    def load_image(self, image_id: Any) -> np.ndarray:
        """Decode ``image_id`` as an ``HxWx3`` uint8 RGB array."""
        from PIL import Image, UnidentifiedImageError

        path = self.image_path(image_id)
        if not path.is_file():
            raise DatasetError(f"image file of id {image_id!r} not found: {path}; check the images folder")
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"image file {path} cannot be decoded: {exc}") from None
        return arr

    # ----------------------------------------------------------------- subsets
    def subset(self, max_images: int | None) -> CocoDataset:
        """The first ``max_images`` images (ascending id) with their annotations; all when None."""
        if max_images is None or max_images >= len(self):
            return self
        if max_images < 1:
            raise DatasetError(f"max_images must be >= 1, got {max_images}")
        return self.select(self._ids[: int(max_images)])

    def shard(self, index: int, count: int) -> CocoDataset:
        """Every ``count``-th image starting at ``index`` (for splitting work across workers)."""
        if count < 1 or not 0 <= index < count:
            raise DatasetError(f"shard index {index} out of range for {count} shards")
        return self.select(self._ids[index::count])

    def select(self, image_ids: Sequence[Any]) -> CocoDataset:
        """A dataset restricted to ``image_ids``."""
        keep = set(image_ids)
        missing = keep - set(self._images)
        if missing:
            raise DatasetError(f"image ids {sorted(missing)[:5]} are not in {self.annotations_path}")
        data = dict(self._data)
        data["images"] = [img for img in self._data["images"] if img["id"] in keep]
        data["annotations"] = [a for a in self._data["annotations"] if a["image_id"] in keep]
        return CocoDataset(self.annotations_path, self.images_dir, _data=data)

    def to_dict(self) -> dict:
        """The (possibly restricted) ground truth as a COCO JSON object."""
        return {k: v for k, v in self._data.items()}
