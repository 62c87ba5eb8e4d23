"""The ``keras`` backend: our Keras 3 implementation, compiled as one ``tf.function``.

The network object (CenterNet, SSD, Faster R-CNN...) is called on the uint8 batch and returns its
``postprocess`` dict (0-based classes); this backend adds the exporter's label-id offset.

The whole path (resize, normalization, network, peak extraction, box and keypoint decoding) runs in a
single graph traced once for ``[None, None, None, 3]`` uint8 input, so images of any size and any
batch size reuse one trace. Autograph is off: the graph has no Python control flow on tensors, and
converting the code would add seconds to the cold start. ``jit_compile=True`` asks XLA to compile
it (off by default: on CPUs it is slower); if XLA rejects the graph the backend falls back to the
plain graph with a ``RuntimeWarning`` and records why in ``jit_fallback_reason``.

``fold_batchnorm`` picks how the traced graph runs the network (see
:class:`~zoo.backends.inference_graph.InferenceGraph`): ``"fused"`` (default, also ``True``) emits
each BatchNorm that follows a convolution as one ``FusedBatchNormV3`` op, which TensorFlow's graph
optimizer fuses with the convolution, bias and ReLU6 (same arithmetic as the Keras layers, so even
near-tied scores keep their order); ``"kernel"`` folds the BatchNorm into the convolution's kernel and
bias (faster still; outputs differ from the unfolded model by float rounding, ~1e-6 relative, which
can swap detections whose scores tie within that); ``False`` calls the Keras model as is. The graph
reads the live variables, so training or restoring weights later is reflected by the next call;
:attr:`net` and its ``keras_model`` stay the trainable Keras objects. Networks whose ``keras_model``
is not a functional Keras model run as is; a functional graph the rewrite cannot follow runs as is
with a ``RuntimeWarning`` (``fold_fallback_reason``), and a Keras without the internals the rewrite
reads raises :class:`~zoo.backends.inference_graph.KerasInternalsError`.

``precision="float16"`` / ``"bfloat16"`` runs the network's convolutions in that dtype (weights are
cast from the float32 variables inside the graph; BatchNorm statistics, pre- and post-processing stay
float32; BatchNorm is then folded into the kernels in float32 before the cast, whatever
``fold_batchnorm`` says): for GPUs and TPUs, where it is faster. It changes outputs, so it is off by default;
:func:`zoo.agreement.detection_agreement` measures how far the detections move.

``sparse_heads=True`` (default, with folding on) lets a box-only CenterNet evaluate its box-size and
offset heads only at the detected peaks (:mod:`zoo.backends.centernet_sparse`) instead of over the
whole output grid; the detections are the same (float rounding apart).

:attr:`on_first_trace`, when set, is called once with the backend after its first successful call:
:func:`zoo.load` uses it to store the traced graph in the cache, so that later processes run it
without building or tracing (:mod:`zoo.backends.stored_trace`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from ..errors import ConfigError
from .centernet_sparse import sparse_centernet_call, supports_sparse_heads
from .inference_graph import MODES, PRECISIONS, InferenceGraph, supports_folding

if TYPE_CHECKING:
    from ..models.protocols import MetaArchitecture

__all__ = ["KerasBackend"]

_SIGNATURE = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="input_tensor")]


class KerasBackend:
    """Runs a model of :mod:`zoo.models` (a :class:`~zoo.models.protocols.MetaArchitecture`) with the
    serving signature's outputs."""

    name = "keras"
    supports_batch = True

    def __init__(
        self,
        net: MetaArchitecture,
        *,
        jit_compile: bool = False,
        fold_batchnorm: bool | str = True,
        sparse_heads: bool = True,
        precision: str = "float32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.net = net
        self.keras_model = net.keras_model
        self.trace_count = 0
        self.jit_compile = bool(jit_compile)
        self.jit_fallback_reason: str | None = None
        mode = "fused" if fold_batchnorm is True else fold_batchnorm
        if mode not in (False, None, *MODES):
            raise ConfigError(f"fold_batchnorm must be True, False or one of {MODES}, got {fold_batchnorm!r}")
        #: the InferenceGraph mode in use ("fused" / "kernel"), or None when the Keras model runs as is
        self.fold_batchnorm: str | None = mode if mode and supports_folding(self.keras_model) else None
        if precision != "float32" and not self.fold_batchnorm:
            raise ConfigError(
                f"precision={precision!r} needs the inference graph (fold_batchnorm on and a functional Keras model)"
            )
        #: compute dtype of the network's convolutions
        self.precision = precision
        self.folded_batchnorms = 0  # BatchNorm layers folded in the traced graph (known after tracing)
        #: whether box heads are evaluated at the peaks only (see zoo.backends.centernet_sparse)
        self.sparse_heads = bool(sparse_heads and self.fold_batchnorm and supports_sparse_heads(net))
        self.fold_fallback_reason: str | None = None  # set if the rewrite failed and the model ran as is
        #: called once with this backend after the first successful call (the trace store's writer)
        self.on_first_trace: Callable[[KerasBackend], Any] | None = None
        self._fn = self._make(self.jit_compile)

    def _serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        self.trace_count += 1  # Python side effect: runs once per trace, never per call
        out = None
        if self.fold_batchnorm and self.net.keras_model is self.keras_model:
            try:
                out = self._serve_optimised(images)
            except (AttributeError, TypeError, KeyError) as exc:  # a layer graph the rewrite does not understand
                if self.precision != "float32":
                    raise ConfigError(f"precision={self.precision!r}: the inference graph rewrite failed: {exc}") from exc
                self.fold_fallback_reason = f"inference graph rewrite failed, running the Keras model as is: {exc}"
                warnings.warn(self.fold_fallback_reason, RuntimeWarning, stacklevel=2)
                self.fold_batchnorm, self.sparse_heads, self.folded_batchnorms = None, False, 0
        if out is None:
            out = dict(self.net(images))
        out["detection_classes"] = tf.cast(out["detection_classes"], tf.float32) + 1.0
        out["num_detections"] = tf.cast(out["num_detections"], tf.float32)
        return out

    def _serve_optimised(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        mode = str(self.fold_batchnorm)
        if self.sparse_heads:
            result, self.folded_batchnorms = sparse_centernet_call(self.net, images, mode, self.precision)
            return dict(result)
        graph = InferenceGraph(self.keras_model, mode, self.precision)
        self.net.keras_model = graph  # only while tracing: the net's predict() calls it like the model
        try:
            out = dict(self.net(images))
        finally:
            self.net.keras_model = self.keras_model
        self.folded_batchnorms = graph.folded
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
            warnings.warn(self.jit_fallback_reason + "; running without XLA", RuntimeWarning, stacklevel=2)
            self.jit_compile = False
            self._fn = self._make(False)
            out = self._fn(tensor)
        if self.on_first_trace is not None:
            hook, self.on_first_trace = self.on_first_trace, None
            if not self.jit_compile:
                hook(self)
        return {k: v.numpy() for k, v in out.items()}
