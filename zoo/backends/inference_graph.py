"""An inference-only view of a functional Keras model, with BatchNorm folded into its convolution.

:class:`InferenceGraph` walks the layer graph of a functional ``keras.Model`` (nested functional
models and ``Sequential`` models included) and emits plain TensorFlow ops for it, as the model
would compute with ``training=False``, with two rewrites:

* a ``Conv2D`` / ``DepthwiseConv2D`` / ``SeparableConv2D`` whose output goes only into a
  ``BatchNormalization`` layer is computed with the normalization folded in: kernel multiplied by
  ``gamma / sqrt(moving_variance + epsilon)``, bias ``(bias - moving_mean) * that + beta``;
* every convolution adds its bias with ``BiasAdd`` and ``ReLU`` / ``ReLU(6)`` layers become
  ``Relu`` / ``Relu6``.

TensorFlow's graph optimizer fuses the resulting ``Conv2D + BiasAdd + Relu6`` chains into single
kernels, which the unfused Keras 3 BatchNormalization (a multiply and an add over the whole feature
map) prevents. The folded kernels are computed inside the graph from the model's live variables, so
the view never goes stale: after ``fit`` or a checkpoint restore the next call uses the new weights.
Layers it does not know are called as the model calls them (``training=False``).
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = ["MODES", "PRECISIONS", "InferenceGraph", "KerasInternalsError", "check_keras_internals", "count_folded", "supports_folding"]

MODES = ("fused", "kernel")
#: compute dtypes of the network's convolutions (weights stay float32 variables; BatchNorm statistics,
#: pre- and post-processing stay float32)
PRECISIONS = ("float32", "float16", "bfloat16")
_CONVS = (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2D)


# The layer-graph attributes of a functional keras.Model this module reads. They are Keras internals
# (stable through Keras 3; pyproject pins keras<4): a Keras that drops them fails loudly here
# instead of silently running the unoptimised model.
_FUNCTIONAL_INTERNALS = ("_nodes_by_depth", "_outputs_struct")


class KerasInternalsError(RuntimeError):
    """The installed Keras no longer has the functional-model internals the inference graph reads."""


def _is_functional(op: Any) -> bool:
    """A functional model: a ``keras.Model`` built from ``keras.Input`` tensors (public ``inputs``)."""
    if not isinstance(op, keras.Model) or isinstance(op, keras.Sequential):
        return False
    try:
        inputs = op.inputs
    except AttributeError:  # a subclassed model: has no symbolic inputs
        return False
    if not inputs:
        return False
    check_keras_internals(op)
    return True


def check_keras_internals(model: Any) -> None:
    """Raise :class:`KerasInternalsError` when a functional ``model`` lacks the internals read here."""
    missing = [name for name in _FUNCTIONAL_INTERNALS if not hasattr(model, name)]
    if missing:
        raise KerasInternalsError(
            f"keras {keras.__version__}: functional models no longer have {', '.join(missing)}, which odzoo's "
            "inference graph reads; install a keras 3 release (odzoo requires keras<4)"
        )


def _graph_of(op: Any) -> Any:
    """The functional graph behind ``op`` (a Sequential delegates to its inner functional model)."""
    if isinstance(op, keras.Sequential):
        if not hasattr(op, "_functional"):
            raise KerasInternalsError(
                f"keras {keras.__version__}: Sequential models no longer have _functional, which odzoo's "
                "inference graph reads; install a keras 3 release (odzoo requires keras<4)"
            )
        inner = op._functional
        if inner is None:  # not built yet (no Input): not walkable
            return None
        return inner if _is_functional(inner) else None
    return op if _is_functional(op) else None


def supports_folding(model: Any) -> bool:
    """Whether ``model`` is a functional Keras model :class:`InferenceGraph` can walk."""
    return _graph_of(model) is not None


def _foldable_conv(layer: Any) -> bool:
    """A 2-D convolution we can re-emit: channels-last, ungrouped, no transpose."""
    if not isinstance(layer, _CONVS) or isinstance(layer, keras.layers.Conv2DTranspose):
        return False
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    return int(getattr(layer, "groups", 1) or 1) == 1


def _foldable_bn(layer: Any) -> bool:
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    axis = layer.axis if isinstance(layer.axis, int) else None
    return axis in (-1, 3) and not getattr(layer, "renorm", False)


def _activation(layer: Any, x: tf.Tensor) -> tf.Tensor | None:
    """``Relu`` / ``Relu6`` for plain ReLU layers; None when the layer is something else."""
    if not isinstance(layer, keras.layers.ReLU):
        return None
    if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
        return None
    if layer.max_value is None:
        return tf.nn.relu(x)
    if float(layer.max_value) == 6.0:
        return tf.nn.relu6(x)
    return None


def _bn_scale_shift(bn: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(s, t)`` with ``bn(x) == x * s + t`` at inference."""
    scale = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
    if bn.gamma is not None:
        scale = scale * tf.convert_to_tensor(bn.gamma)
    shift = -tf.convert_to_tensor(bn.moving_mean) * scale
    if bn.beta is not None:
        shift = shift + tf.convert_to_tensor(bn.beta)
    return scale, shift


def _fused_bn(bn: Any, x: tf.Tensor) -> tf.Tensor:
    """Inference BatchNorm as the single ``FusedBatchNormV3`` op the graph optimizer fuses into a convolution."""
    channels = tf.shape(bn.moving_mean)
    gamma = tf.convert_to_tensor(bn.gamma) if bn.gamma is not None else tf.ones(channels, tf.float32)
    beta = tf.convert_to_tensor(bn.beta) if bn.beta is not None else tf.zeros(channels, tf.float32)
    y, _, _ = tf.compat.v1.nn.fused_batch_norm(
        x, gamma, beta, mean=tf.convert_to_tensor(bn.moving_mean), variance=tf.convert_to_tensor(bn.moving_variance),
        epsilon=bn.epsilon, is_training=False,
    )
    return y


def _strides(layer: Any) -> list[int]:
    return [1, int(layer.strides[0]), int(layer.strides[1]), 1]


def _dilations(layer: Any) -> list[int]:
    return [1, int(layer.dilation_rate[0]), int(layer.dilation_rate[1]), 1]


def _kernel_op(layer: Any, x: tf.Tensor, dtype: tf.DType = tf.float32) -> tuple[tf.Tensor, tf.Tensor, Any]:
    """``(input of the last op, its kernel, reshape of a per-output-channel vector onto the kernel)``.

    A separable convolution's depthwise part is applied here; its pointwise kernel is returned.
    """
    padding = str(layer.padding).upper()
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise = tf.cast(tf.convert_to_tensor(layer.depthwise_kernel), dtype)
        x = tf.nn.depthwise_conv2d(x, depthwise, _strides(layer), padding, dilations=layer.dilation_rate)
        return x, tf.convert_to_tensor(layer.pointwise_kernel), None
    kernel = tf.convert_to_tensor(layer.kernel)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # output channel c*m+j <- input channel c, multiplier j; static, so tracing adds no shape ops
        return x, kernel, tuple(int(d) for d in layer.kernel.shape[2:])
    return x, kernel, None


def _apply_kernel(layer: Any, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    if isinstance(layer, keras.layers.SeparableConv2D):
        return tf.nn.conv2d(x, kernel, 1, "VALID")
    padding = str(layer.padding).upper()
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return tf.nn.depthwise_conv2d(x, kernel, _strides(layer), padding, dilations=layer.dilation_rate)
    return tf.nn.conv2d(x, kernel, _strides(layer), padding, dilations=_dilations(layer))


def _conv(layer: Any, x: tf.Tensor, bn: Any = None, dtype: tf.DType = tf.float32) -> tf.Tensor:
    """The convolution ``layer`` on ``x`` (its activation included), with ``bn`` folded in if given.

    Weights are read (and folded) in float32, then cast with ``x`` to ``dtype``.
    """
    x, kernel, channel_shape = _kernel_op(layer, tf.cast(x, dtype), dtype)
    bias = tf.convert_to_tensor(layer.bias) if layer.use_bias else None
    if bn is not None:
        scale, shift = _bn_scale_shift(bn)
        kernel = kernel * (tf.reshape(scale, channel_shape) if channel_shape is not None else scale)
        bias = shift if bias is None else bias * scale + shift
    y = _apply_kernel(layer, x, tf.cast(kernel, dtype))
    if bias is not None:
        y = tf.nn.bias_add(y, tf.cast(bias, dtype))
    activation = getattr(layer, "activation", None)
    if activation is not None and activation is not keras.activations.linear:
        y = activation(y)
    return y


class InferenceGraph:
    """``graph(x)`` computes ``model(x, training=False)`` with BatchNorm folded (see module docstring).

    ``model`` must be a functional ``keras.Model``; ``graph.folded`` counts the folded BatchNorms
    (known once the graph has been called).
    """

    def __init__(self, model: keras.Model, mode: str = "fused", precision: str = "float32") -> None:
        if _graph_of(model) is None:
            raise TypeError(f"InferenceGraph needs a functional keras.Model, got {type(model).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = model
        self.mode = mode
        self.precision = precision
        self._dtype = tf.as_dtype(precision)
        self.folded = 0

    def __call__(self, inputs: Any, training: bool = False) -> Any:
        if training:
            return self.model(inputs, training=True)
        self.folded = 0
        out = self._run(_graph_of(self.model), inputs)
        if self._dtype == tf.float32:
            return out
        return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, out)

    # ------------------------------------------------------------------ graph walk
    def _run(self, graph: Any, inputs: Any) -> Any:
        flat_inputs = tf.nest.flatten(inputs)
        values: dict[int, Any] = {id(ref): val for ref, val in zip(graph.inputs, flat_inputs)}
        consumers = _consumers(graph)
        output_ids = {id(t) for t in graph.outputs}
        fold_into: dict[int, Any] = {}  # id(BN node) -> conv layer folded into it
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(t) not in values for t in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(values)
                outputs = self._node(node, args, kwargs, consumers, output_ids, fold_into)
                for ref, val in zip(node.outputs, tf.nest.flatten(outputs)):
                    values[id(ref)] = val
        flat_out = [values[id(t)] for t in graph.outputs]
        return tf.nest.pack_sequence_as(graph._outputs_struct, flat_out)

    def _node(self, node: Any, args: tuple, kwargs: dict, consumers: dict, output_ids: set, fold_into: dict) -> Any:
        op = node.operation
        if kwargs.get("mask", 0) is None:  # Keras records an absent mask as mask=None
            kwargs = {k: v for k, v in kwargs.items() if k != "mask"}
        if id(node) in fold_into:  # a BatchNorm already folded into its convolution: identity
            return args[0]
        inner = _graph_of(op)
        if inner is not None and not kwargs and len(args) == 1:
            return self._run(inner, args[0])
        if _foldable_conv(op) and not kwargs and len(args) == 1 and len(node.outputs) == 1:
            out_id = id(node.outputs[0])
            users = consumers.get(out_id, [])
            if out_id not in output_ids and len(users) == 1 and _foldable_bn(users[0].operation):
                bn = users[0].operation
                fold_into[id(users[0])] = op
                self.folded += 1
                if self.mode == "kernel" or self._dtype != tf.float32:  # low precision: folded in float32, then cast
                    return _conv(op, args[0], bn, self._dtype)
                return _fused_bn(bn, _conv(op, args[0], dtype=self._dtype))
            return _conv(op, args[0], dtype=self._dtype)
        if len(args) == 1 and not kwargs:
            act = _activation(op, args[0])
            if act is not None:
                return act
        if isinstance(op, keras.layers.Layer) and getattr(op, "_call_has_training_arg", False):
            kwargs = dict(kwargs, training=False)
        return op(*args, **kwargs)


def _consumers(graph: Any) -> dict[int, list[Any]]:
    """id(tensor) -> the nodes of ``graph`` that take it as input."""
    out: dict[int, list[Any]] = {}
    for nodes in graph._nodes_by_depth.values():
        for node in nodes:
            if not node.operation or node.is_input:
                continue
            seen = set()
            for t in node.input_tensors:
                if id(t) not in seen:
                    seen.add(id(t))
                    out.setdefault(id(t), []).append(node)
    return out


def count_folded(model: keras.Model, input_shape: tuple[int, ...] = (1, 64, 64, 3)) -> int:
    """How many BatchNorm layers :class:`InferenceGraph` folds for ``model`` (traces it once, symbolically)."""
    graph = InferenceGraph(model)
    fn = tf.function(graph, autograph=False)
    fn.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    return graph.folded
