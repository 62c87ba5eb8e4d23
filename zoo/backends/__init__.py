"""Inference backends behind ``Detector.detect``: ``keras`` (ours), ``saved_model``, ``hub``, ``tflite``.

Every backend maps a ``[B, H, W, 3]`` uint8 batch to the outputs of the zoo's exported
``serving_default`` signature, as numpy arrays: ``detection_boxes`` ``[B, N, 4]`` normalized
(ymin, xmin, ymax, xmax), ``detection_scores`` ``[B, N]``, ``detection_classes`` ``[B, N]`` (1-based
label ids, float as exported), ``num_detections`` ``[B]``, and where the model has them
``detection_keypoints`` ``[B, N, K, 2]`` normalized (y, x) and ``detection_keypoint_scores``.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["BACKENDS", "Backend"]

BACKENDS = ("keras", "saved_model", "hub", "tflite")


class Backend(Protocol):
    """What ``Detector`` needs from a backend."""

    name: str
    supports_batch: bool
    keras_model: Any

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, H, W, 3]`` uint8 -> serving-style outputs (see the module docstring)."""
        ...
