"""The ``tflite`` backend: an exported ``model.tflite`` run by the LiteRT interpreter.

The folder is one written by ``odzoo export --format tflite`` (:mod:`zoo.exporting`): ``model.tflite``,
``pipeline.config`` (its image resizer) and ``export.json`` (the order of the model's outputs). The
model takes the resized image, as the zoo's TFLite exports do; this backend runs the model's resizer
on each image first (one image per interpreter call), then the interpreter, whose graph holds the
network and the post-processing (NMS or peak extraction). Outputs follow the serving signature.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotCachedError, UnsupportedModelError

__all__ = ["TFLiteBackend", "read_export_facts"]

MODEL_FILE = "model.tflite"
FACTS_FILE = "export.json"


def read_export_facts(folder: Path) -> dict[str, Any]:
    """``export.json`` of an exported folder (empty when absent or not an object)."""
    path = folder / FACTS_FILE
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


class TFLiteBackend:
    """``ai_edge_litert.interpreter.Interpreter`` behind the common interface."""

    name = "tflite"
    keras_model = None
    supports_batch = False

    def __init__(self, folder: str | os.PathLike[str], *, num_threads: int | None = None) -> None:
        from ..models.preprocess import resizer_from_config
        from ..pipeline_config import load, model_config

        folder = Path(folder)
        model = folder if folder.is_file() else folder / MODEL_FILE
        if model.is_file():
            folder = model.parent
        else:
            raise NotCachedError(f"no {MODEL_FILE} in {folder}; export one with: odzoo export MODEL --format tflite -o DIR")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise UnsupportedModelError("backend='tflite' needs the ai-edge-litert package (pip install ai-edge-litert)") from exc
        config = folder / "pipeline.config"
        if not config.is_file():
            raise NotCachedError(f"{folder} has no pipeline.config (the exported model's image resizer)")
        _, msg = model_config(load(config))
        self.resizer = resizer_from_config(msg["image_resizer"])
        self.path = model
        self.facts = read_export_facts(folder)
        self.interpreter = Interpreter(model_path=str(model), num_threads=num_threads or os.cpu_count() or 1)
        self.interpreter.allocate_tensors()
        inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        if set(inputs) != {"images", "true_shapes"}:
            raise UnsupportedModelError(f"{model} takes {sorted(inputs)}; expected a model exported by odzoo "
                                        "(inputs images, true_shapes)")
        self._images = inputs["images"]["index"]
        self._true_shapes = inputs["true_shapes"]["index"]
        outputs = self.interpreter.get_output_details()
        keys = self.facts.get("outputs")
        if not isinstance(keys, list) or len(keys) != len(outputs):
            raise UnsupportedModelError(f"{folder / FACTS_FILE} does not list the {len(outputs)} outputs of {model}; "
                                        "export the model again")
        self._outputs = [(str(k), d["index"]) for k, d in zip(keys, outputs)]
        self._resize = None

    def _resized(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._resize is None:
            import tensorflow as tf

            from ..models.preprocess import resize_batch

            resizer = self.resizer
            self._resize = tf.function(
                lambda images: resize_batch(resizer, images),
                input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)], autograph=False,
            )
        resized, shapes = self._resize(image[np.newaxis])
        return resized.numpy(), shapes.numpy().astype(np.int32)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, H, W, 3]`` uint8 -> serving-style outputs (one interpreter call per image)."""
        parts = []
        for image in batch:
            resized, shapes = self._resized(image)
            self.interpreter.set_tensor(self._images, resized)
            self.interpreter.set_tensor(self._true_shapes, shapes)
            self.interpreter.invoke()
            parts.append({key: np.array(self.interpreter.get_tensor(index)) for key, index in self._outputs})
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}
