"""Training input for SSD-family models: images with their padded ground-truth boxes.

Anchor targets depend on the model's anchors, so they are assigned in the training graph
(:mod:`zoo.train.ssd.targets`); each example carries only ``image``, ``boxes`` ``[max_boxes, 4]``
(normalized to the network input), ``classes`` ``[max_boxes]`` (0-based), ``weights``
``[max_boxes]`` (1 for a real box, 0 for padding) and ``window`` ``[2]``: the fraction of the input
height and width the picture covers (the rest is padding, which the model's preprocessing leaves 0
after normalization; see :class:`~zoo.train.ssd.objective.SsdObjective`). Decoding, augmentation, resizing, shuffling and
seeding are those of :class:`~zoo.train.data.TrainingData`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..augment import augment
from ..data import TrainingData, resize_and_pad


class BoxTrainingData(TrainingData):
    """A COCO-format dataset prepared for SSD training (see the module docstring)."""

    def example(self, index: int, draw: int, *, augmented: bool = True) -> dict[str, np.ndarray]:
        """The training example of image ``index`` as the ``draw``-th sample of the stream."""
        return self.example_with_sample(index, draw, augmented=augmented)[0]

    def example_with_sample(self, index: int, draw: int, *,
                            augmented: bool = True) -> tuple[dict[str, np.ndarray], Any, np.ndarray, tuple[float, float]]:
        """:meth:`example`, the augmented sample it came from, the indices of the sample's boxes it
        kept (in the example's row order) and the ``(fy, fx)`` resize factors: what a subclass needs
        to add per-box fields."""
        sample = self.raw_sample(index)
        if augmented and self.augment_config is not None:
            sample = augment(sample, np.random.default_rng([self.seed, int(draw)]), self.augment_config)
        image, (fy, fx) = resize_and_pad(sample.image, self.geometry)
        boxes = np.clip(sample.boxes.reshape(-1, 4) * np.array([fy, fx, fy, fx], np.float32), 0.0, 1.0)
        keep = ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                & (sample.classes >= 0) & (sample.classes < self.num_classes))
        kept = np.flatnonzero(keep)[: self.max_boxes]
        n = kept.size
        out_boxes = np.zeros((self.max_boxes, 4), np.float32)
        out_classes = np.zeros((self.max_boxes,), np.int32)
        weights = np.zeros((self.max_boxes,), np.float32)
        out_boxes[:n], out_classes[:n], weights[:n] = boxes[kept], sample.classes[kept], 1.0
        example = {"image": image, "boxes": out_boxes, "classes": out_classes, "weights": weights,
                   "window": np.array([fy, fx], np.float32)}
        return example, sample, kept, (fy, fx)

    def _specs(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        import tensorflow as tf

        m = self.max_boxes
        return {
            "image": ((self.geometry.height, self.geometry.width, 3), tf.float32),
            "boxes": ((m, 4), tf.float32),
            "classes": ((m,), tf.int32),
            "weights": ((m,), tf.float32),
            "window": ((2,), tf.float32),
        }
