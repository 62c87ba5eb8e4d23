"""Datasets: read COCO-format data and generate a small synthetic one."""
from __future__ import annotations

from .coco import CocoDataset
from .synthetic import SHAPES, make_shapes_dataset

__all__ = ["CocoDataset", "SHAPES", "make_shapes_dataset"]
