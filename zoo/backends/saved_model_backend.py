"""The ``saved_model`` backend: the archive's exported SavedModel, ``serving_default`` signature.

Works for every zoo model (SSD, Faster R-CNN, EfficientDet, CenterNet...) since it needs no
implementation of ours. The zoo exports take one uint8 image at a time (``[1, H, W, 3]``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from ..errors import NotCachedError, UnsupportedModelError

__all__ = ["SavedModelBackend", "serving_outputs"]


def serving_outputs(fn: Any, batch: np.ndarray, batch_dim: int | None) -> dict[str, np.ndarray]:
    """Call a serving function on a uint8 batch, one image at a time when it only takes batch 1."""
    if batch_dim == 1 and batch.shape[0] != 1:
        parts = [serving_outputs(fn, batch[i : i + 1], batch_dim) for i in range(batch.shape[0])]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
    out = fn(tf.convert_to_tensor(batch, tf.uint8))
    return {k: np.asarray(v.numpy()) for k, v in out.items()}


class SavedModelBackend:
    """``tf.saved_model.load(path).signatures["serving_default"]`` behind the common interface."""

    name = "saved_model"
    keras_model = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = Path(path)
        if (p / "saved_model").is_dir():
            p = p / "saved_model"
        if not (p / "saved_model.pb").is_file():
            raise NotCachedError(f"no SavedModel in {p} (expected {p / 'saved_model.pb'}); this archive has no export")
        self.path = p
        self._loaded = tf.saved_model.load(str(p))
        signatures = getattr(self._loaded, "signatures", {})
        if "serving_default" not in signatures:
            raise UnsupportedModelError(f"SavedModel {p} has no 'serving_default' signature (has: {list(signatures)})")
        self._sig = signatures["serving_default"]
        _, kwargs = self._sig.structured_input_signature
        if len(kwargs) != 1:
            raise UnsupportedModelError(f"SavedModel {p} serving_default takes {sorted(kwargs)}; expected one image input")
        (self._input_name, spec), = kwargs.items()
        if spec.dtype != tf.uint8:
            raise UnsupportedModelError(f"SavedModel {p} takes {spec.dtype.name} input; only uint8 image exports are supported")
        self._batch_dim = spec.shape[0] if spec.shape.rank else None
        self.supports_batch = self._batch_dim != 1

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, H, W, 3]`` uint8 -> the signature's outputs as numpy arrays."""
        name = self._input_name
        return serving_outputs(lambda t: self._sig(**{name: t}), batch, self._batch_dim)
