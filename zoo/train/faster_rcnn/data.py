"""Training input for Faster R-CNN and Mask R-CNN: the padded ground-truth boxes of
:class:`~zoo.train.ssd.data.BoxTrainingData` and, with ``with_masks``, each box's instance mask.

Masks come from the annotations' COCO ``segmentation`` (polygons, or RLE compressed or not), are
decoded at the image's size, follow the image through augmentation (flip, crop/zoom; see
:mod:`zoo.train.augment`) and are resized (nearest) and padded exactly like the image, so each
example adds ``masks`` ``[max_boxes, H, W]`` uint8 at the network input size and ``mask_weights``
``[max_boxes]`` (1 where the box has a mask).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data import usable_box
from ..ssd.data import BoxTrainingData

__all__ = ["FasterRcnnTrainingData", "decode_segmentation", "has_segmentation"]


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray | None:
    """A COCO ``segmentation`` (polygon list, or RLE) as a ``[height, width]`` uint8 mask; None when absent or empty."""
    from pycocotools import mask as mask_utils

    if not segmentation:
        return None
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return None
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle["counts"], str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
        if tuple(int(v) for v in rle["size"]) != (height, width):
            return None
    else:
        return None
    return np.asarray(mask_utils.decode(rle), np.uint8)


def has_segmentation(dataset: Any) -> bool:
    """Whether any annotation of ``dataset`` carries a ``segmentation``."""
    return any(ann.get("segmentation") for image_id in dataset.image_ids for ann in dataset.annotations(image_id))


class FasterRcnnTrainingData(BoxTrainingData):
    """Boxes (and, with ``with_masks``, instance masks) of a COCO-format dataset for Faster R-CNN training."""

    def __init__(self, *args: Any, with_masks: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.with_masks = bool(with_masks)

    def raw_sample(self, index: int) -> Any:
        sample = super().raw_sample(index)
        if not self.with_masks:
            return sample
        image_id = self.image_ids[int(index)]
        h, w = sample.image.shape[:2]
        masks = [decode_segmentation(ann.get("segmentation"), h, w)
                 for ann in self.dataset.annotations(image_id) if usable_box(ann, self._class_of)]
        # a box without a mask is marked by 255s (real masks are 0/1); example gives it weight 0
        sample.masks = np.stack([m if m is not None else np.full((h, w), 255, np.uint8) for m in masks]) \
            if masks else np.zeros((0, h, w), np.uint8)
        return sample

    def example(self, index: int, draw: int, *, augmented: bool = True) -> dict[str, np.ndarray]:
        if not self.with_masks:
            return super().example(index, draw, augmented=augmented)
        out, sample, kept, (fy, fx) = self.example_with_sample(index, draw, augmented=augmented)
        out["masks"] = np.zeros((self.max_boxes, self.geometry.height, self.geometry.width), np.uint8)
        out["mask_weights"] = np.zeros((self.max_boxes,), np.float32)
        new_h, new_w = round(fy * self.geometry.height), round(fx * self.geometry.width)
        for row, i in enumerate(kept):
            mask = sample.masks[i]
            if mask.max(initial=0) == 255:  # the box had no segmentation
                continue
            out["masks"][row, :new_h, :new_w] = _resize_nearest(mask, new_h, new_w)
            out["mask_weights"][row] = 1.0
        return out

    def _specs(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        import tensorflow as tf

        specs = super()._specs()
        if self.with_masks:
            m, g = self.max_boxes, self.geometry
            specs["masks"] = ((m, g.height, g.width), tf.uint8)
            specs["mask_weights"] = ((m,), tf.float32)
        return specs


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    if mask.shape == (height, width):
        return mask
    return np.asarray(Image.fromarray(mask).resize((width, height), Image.NEAREST))
