"""FLOPs of a traced detection graph, and the machine's measured peak FLOP/s to compare them with.

:func:`graph_flops` walks a ``tf.Graph`` (function bodies it calls included) and counts the
floating-point operations of its dense-compute ops: convolutions (``Conv2D``, depthwise, and the
fused forms the graph may hold), matrix products (``MatMul``, ``BatchMatMul``, ``Einsum``), as
``2 x multiply-accumulates``. Element-wise ops, resizing and pooling are left out: they are a few
percent of a detector's work and not what a peak FLOP/s figure measures. Shapes must be static, so
trace with a fixed input shape (:func:`detector_flops` does).

:func:`measure_peak` times a square matmul and a 3x3 convolution, the best FLOP/s of the two being
the machine's practical peak under the current thread settings. The ratio achieved / peak says how
close a model gets to what the machine can do.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = ["detector_flops", "graph_flops", "measure_peak"]

_CONVS = {"Conv2D", "_FusedConv2D", "Conv2DBackpropInput", "Conv3D"}
_DEPTHWISE = {"DepthwiseConv2dNative", "_FusedDepthwiseConv2dNative"}
_MATMULS = {"MatMul", "_FusedMatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"}


def _static(shape: tf.TensorShape) -> list[int] | None:
    if shape.rank is None or any(d is None for d in shape.as_list()):
        return None
    return shape.as_list()


def _op_flops(op: Any) -> tuple[int, bool]:
    """``(flops, shapes_known)`` of one op (0 for ops that are not counted)."""
    kind = op.type
    if kind in _CONVS or kind in _DEPTHWISE:
        out = _static(op.outputs[0].shape)
        kernel = _static(op.inputs[1].shape)
        if out is None or kernel is None:
            return 0, False
        if kind == "Conv2DBackpropInput":  # transposed conv: MACs per input position
            inp = _static(op.inputs[2].shape)
            if inp is None:
                return 0, False
            return 2 * int(np.prod(inp)) * int(np.prod(kernel[:2])) * kernel[2], True
        taps = int(np.prod(kernel[:-2]))  # kh * kw (* kd)
        per_output = taps * (1 if kind in _DEPTHWISE else kernel[-2])
        return 2 * int(np.prod(out)) * per_output, True
    if kind in _MATMULS:
        a, out = _static(op.inputs[0].shape), _static(op.outputs[0].shape)
        if a is None or out is None:
            return 0, False
        transpose_a = bool(op.get_attr("transpose_a") if kind in {"MatMul", "_FusedMatMul"} else op.get_attr("adj_x"))
        k = a[-2] if transpose_a else a[-1]
        return 2 * int(np.prod(out)) * k, True
    if kind == "Einsum":
        out = _static(op.outputs[0].shape)
        ins = [_static(t.shape) for t in op.inputs]
        if out is None or any(s is None for s in ins):
            return 0, False
        equation = op.get_attr("equation").decode()
        lhs, result = equation.split("->")
        sizes: dict[str, int] = {}
        for labels, shape in zip(lhs.split(","), ins):
            for label, size in zip(labels, shape):  # type: ignore[arg-type]
                sizes[label] = int(size)
        contracted = [label for label in sizes if label not in result]
        return 2 * int(np.prod(out)) * int(np.prod([sizes[c] for c in contracted] or [1])), True
    return 0, True


def graph_flops(graph: tf.Graph) -> dict[str, int]:
    """``{"flops": ..., "ops_counted": ..., "ops_unknown_shape": ...}`` for ``graph`` and the functions it calls."""
    total = counted = unknown = 0
    seen: set[str] = set()

    def walk(ops: Any) -> None:
        nonlocal total, counted, unknown
        for op in ops:
            flops, known = _op_flops(op)
            total += flops
            counted += int(flops > 0)
            unknown += int(not known)

    walk(graph.get_operations())
    library = getattr(graph, "_functions", {})
    for name, fn in list(library.items()):
        if name in seen:
            continue
        seen.add(name)
        inner = getattr(fn, "graph", None)
        if inner is not None:
            walk(inner.get_operations())
    return {"flops": int(total), "ops_counted": counted, "ops_unknown_shape": unknown}


def detector_flops(serve: Any, image_shape: tuple[int, int, int], batch: int = 1) -> dict[str, int]:
    """FLOPs per image of a uint8 ``[B, H, W, 3]`` -> outputs function, traced for that exact shape.

    ``serve`` is a plain Python function building the graph (e.g. the keras backend's ``_serve``); it
    is traced once more, separately from any function the caller already holds.
    """
    spec = tf.TensorSpec([batch, *image_shape], tf.uint8)
    concrete = tf.function(serve, autograph=False).get_concrete_function(spec)
    counts = graph_flops(concrete.graph)
    counts["flops_per_image"] = counts["flops"] // batch
    return counts


def _best_rate(fn: Any, flops: float, seconds: float) -> float:
    fn()  # warm-up: kernels chosen, memory allocated
    best = float("inf")
    deadline = time.perf_counter() + seconds
    runs = 0
    while runs < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return flops / best


def measure_peak(seconds: float = 1.0, *, size: int = 1024, dtype: tf.DType = tf.float32) -> dict[str, float]:
    """Best FLOP/s of a ``size x size`` matmul and of a 3x3 convolution (56x56x256 -> 256) on this machine.

    Each is timed for ``seconds`` (best call kept, the least disturbed by other load); ``peak_flops_per_s``
    is the larger of the two.
    """
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size)), dtype)
    b = tf.constant(rng.standard_normal((size, size)), dtype)
    matmul = tf.function(lambda: tf.matmul(a, b), autograph=False)
    x = tf.constant(rng.standard_normal((1, 56, 56, 256)), dtype)
    w = tf.constant(rng.standard_normal((3, 3, 256, 256)) * 0.05, dtype)
    conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"), autograph=False)
    matmul_rate = _best_rate(lambda: matmul().numpy(), 2.0 * size**3, seconds)
    conv_rate = _best_rate(lambda: conv().numpy(), 2.0 * 56 * 56 * 256 * 9 * 256, seconds)
    return {
        "matmul_flops_per_s": matmul_rate,
        "conv3x3_flops_per_s": conv_rate,
        "peak_flops_per_s": max(matmul_rate, conv_rate),
    }
