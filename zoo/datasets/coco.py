"""Read any COCO-format detection dataset: an annotations JSON file plus a folder of images."""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

_REQUIRED_IMAGE_KEYS = ("id", "file_name")
_REQUIRED_ANN_KEYS = ("image_id", "category_id", "bbox")


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"COCO annotations file not found: {path}; pass the path of an instances JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"COCO annotations file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"COCO annotations file {path} must hold a JSON object with 'images', 'annotations', 'categories'")
    return data


def _validate(data: dict, source: str) -> None:
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f"{source}: missing or malformed {key!r} list (COCO format needs images, annotations, categories)")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or any(k not in img for k in _REQUIRED_IMAGE_KEYS):
            raise DatasetError(f"{source}: images[{i}] lacks one of {_REQUIRED_IMAGE_KEYS}")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{source}: categories[{i}] lacks 'id' or 'name'")
    image_ids = {img["id"] for img in data["images"]}
    if len(image_ids) != len(data["images"]):
        raise DatasetError(f"{source}: image ids are not unique")
    cat_ids = {c["id"] for c in data["categories"]}
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or any(k not in ann for k in _REQUIRED_ANN_KEYS):
            raise DatasetError(f"{source}: annotations[{i}] lacks one of {_REQUIRED_ANN_KEYS}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise DatasetError(f"{source}: annotations[{i}].bbox must be [x, y, width, height], got {bbox!r}")
        if ann["image_id"] not in image_ids:
            raise DatasetError(f"{source}: annotations[{i}] refers to unknown image_id {ann['image_id']}")
        if ann["category_id"] not in cat_ids:
            raise DatasetError(f"{source}: annotations[{i}] refers to unknown category_id {ann['category_id']}")


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
