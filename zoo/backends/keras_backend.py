"""The ``keras`` backend: our Keras 3 implementation, compiled as one ``tf.function``.

The network object (CenterNet, SSD, Faster R-CNN...) is called on the uint8 batch and returns its
``postprocess`` dict (0-based classes); this backend adds the exporter's label-id offset.

The whole path (resize, normalization, network, peak extraction, box and keypoint decoding) runs in a
single graph traced once for ``[None, None, None, 3]`` uint8 input, so images of any size and any
batch size reuse one trace. Autograph is off: the graph has no Python control flow on tensors, and
converting the code would add seconds to the cold start. ``jit_compile=True`` asks XLA to compile it; if XLA rejects the graph the
backend falls back to the plain graph and says so in ``jit_fallback_reason``.

With ``fold_batchnorm=True`` (the default) the traced graph runs the network through an
:class:`~zoo.backends.inference_graph.InferenceGraph`: the same weights, with every BatchNorm that
follows a convolution folded into it, which lets TensorFlow fuse convolution, bias and ReLU6 into
one kernel. The folding is computed inside the graph from the live variables, so training or
restoring weights afterwards is reflected by the next call; :attr:`net` and its ``keras_model`` stay
the trainable Keras objects. Networks whose ``keras_model`` is not a functional Keras model run as is.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from .inference_graph import InferenceGraph, supports_folding

__all__ = ["KerasBackend"]

_SIGNATURE = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="input_tensor")]


class KerasBackend:
    """Runs a :class:`~zoo.models.centernet.CenterNet` with the serving signature's outputs."""

    name = "keras"
    supports_batch = True

    def __init__(self, net: Any, *, jit_compile: bool = False, fold_batchnorm: bool = True) -> None:
        self.net = net
        self.keras_model = net.keras_model
        self.trace_count = 0
        self.jit_compile = bool(jit_compile)
        self.jit_fallback_reason: str | None = None
        self.fold_batchnorm = bool(fold_batchnorm) and supports_folding(self.keras_model)
        self.folded_batchnorms = 0  # BatchNorm layers folded in the traced graph (known after tracing)
        self._fn = self._make(self.jit_compile)

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        self.trace_count += 1  # Python side effect: runs once per trace, never per call
        if self.fold_batchnorm and self.net.keras_model is self.keras_model:
            graph = InferenceGraph(self.keras_model)
            self.net.keras_model = graph  # only while tracing: the net's predict() calls it like the model
            try:
                out = dict(self.net(images))
            finally:
                self.net.keras_model = self.keras_model
            self.folded_batchnorms = graph.folded
        else:
            out = dict(self.net(images))
        out["detection_classes"] = tf.cast(out["detection_classes"], tf.float32) + 1.0
        out["num_detections"] = tf.cast(out["num_detections"], tf.float32)
        return out

    def _make(self, jit: bool) -> Any:
        return tf.function(
            self._serve, input_signature=_SIGNATURE, reduce_retracing=True, jit_compile=jit or None, autograph=False
        )

    @property
    def concrete_function(self) -> Any:
        """The traced graph (traces on first access)."""
        return self._fn.get_concrete_function()

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, H, W, 3]`` uint8 -> serving-style numpy outputs."""
        tensor = tf.convert_to_tensor(batch, tf.uint8)
        try:
            out = self._fn(tensor)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError, tf.errors.InternalError) as exc:
            if not self.jit_compile:
                raise
            self.jit_fallback_reason = f"XLA could not compile the detection graph: {str(exc).splitlines()[0]}"
            self.jit_compile = False
            self._fn = self._make(False)
            out = self._fn(tensor)
        return {k: v.numpy() for k, v in out.items()}
