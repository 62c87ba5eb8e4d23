"""CenterNet box heads evaluated only where ``postprocess`` reads them.

A box-only CenterNet's ``postprocess`` reads the ``box/scale`` and ``box/offset`` maps at the top-k
peaks of the object-centre heatmap and nowhere else, yet the network computes both heads (a 3x3
(possibly separable) convolution to 256 channels, then 1x1) over the whole stride-4 grid. :func:`sparse_centernet_call` computes the backbone and the centre
head as usual, finds the same peaks ``postprocess`` will find, evaluates the box heads at those
positions only (the 3x3 neighbourhood of each peak times the flattened kernel), writes the values
into otherwise-zero maps and hands everything to the network's unchanged ``postprocess``, which then
reads exactly the values it would have read from the dense maps (up to float rounding of a matrix
product instead of a convolution, ~1e-6 relative).

:func:`supports_sparse_heads` says when this applies: a single-stack box-only CenterNet (no keypoint
tasks) whose box heads are one ``same``-padded odd-sized ``Conv2D`` or ``SeparableConv2D`` + ``ReLU``
+ 1x1 ``Conv2D``.
"""
from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from .inference_graph import InferenceGraph, supports_folding

__all__ = ["sparse_centernet_call", "supports_sparse_heads"]

_CENTER, _SCALE, _OFFSET = "object_center", "box/scale", "box/offset"


def _head_layers(head: Any) -> tuple[Any, Any] | None:
    """``(hidden conv, output conv)`` of a head this module can evaluate sparsely, else None."""
    layers = [layer for layer in getattr(head, "layers", []) if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) != 3:
        return None
    hidden, relu, out = layers
    if type(hidden) not in (keras.layers.Conv2D, keras.layers.SeparableConv2D) or type(out) is not keras.layers.Conv2D:
        return None
    if not isinstance(relu, keras.layers.ReLU) or relu.max_value is not None or float(relu.negative_slope) != 0.0:
        return None
    if float(relu.threshold) != 0.0:
        return None
    size = tuple(int(k) for k in hidden.kernel_size)
    simple = all(int(s) == 1 for s in (*hidden.strides, *hidden.dilation_rate, *out.strides))
    linear = all(getattr(c, "activation", None) in (None, keras.activations.linear) for c in (hidden, out))
    if not (simple and linear and hidden.padding == "same" and size[0] == size[1] and size[0] % 2 == 1):
        return None
    if tuple(int(k) for k in out.kernel_size) != (1, 1) or int(getattr(hidden, "groups", 1) or 1) != 1:
        return None
    if getattr(hidden, "data_format", "channels_last") != "channels_last":
        return None
    return hidden, out


def supports_sparse_heads(net: Any) -> bool:
    """Whether ``net`` is a CenterNet whose box heads :func:`sparse_centernet_call` can evaluate."""
    from ..models.centernet import CenterNet

    if not isinstance(net, CenterNet) or net.num_stacks != 1:
        return False
    config = net.config
    if config.keypoint_tasks or not config.detect_boxes or set(net.heads) != {_CENTER, _SCALE, _OFFSET}:
        return False
    if not (supports_folding(net.backbone_model) and supports_folding(net.heads[_CENTER][0])):
        return False
    return all(_head_layers(net.heads[name][0]) is not None for name in (_SCALE, _OFFSET))


def _head_at(head: Any, features: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor) -> tf.Tensor:
    """The head's output ``[B, k, C]`` at grid positions ``(ys, xs)`` (each ``[B, k]``)."""
    hidden, out = _head_layers(head)  # type: ignore[misc]
    size = int(hidden.kernel_size[0])
    pad = size // 2
    padded = tf.pad(features, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.range(size)
    rows = ys[:, :, tf.newaxis, tf.newaxis] + offsets[:, tf.newaxis]  # [B, k, size, 1]
    cols = xs[:, :, tf.newaxis, tf.newaxis] + offsets[tf.newaxis, :]  # [B, k, 1, size]
    grid = tf.shape(rows + cols)
    rows, cols = tf.broadcast_to(rows, grid), tf.broadcast_to(cols, grid)
    patches = tf.gather_nd(padded, tf.stack([rows, cols], -1), batch_dims=1)  # [B, k, size, size, C]
    shape = tf.shape(patches)
    if isinstance(hidden, keras.layers.SeparableConv2D):
        depthwise = tf.convert_to_tensor(hidden.depthwise_kernel)  # [size, size, C, m]
        x = tf.einsum("bkijc,ijcm->bkcm", patches, depthwise)
        x = tf.reshape(x, [shape[0], shape[1], -1])  # channel c*m + j, as the depthwise op orders them
        pointwise = tf.convert_to_tensor(hidden.pointwise_kernel)
        x = tf.matmul(x, tf.reshape(pointwise, [-1, int(hidden.filters)]))
    else:
        flat = tf.reshape(patches, [shape[0], shape[1], -1])
        kernel = tf.reshape(tf.convert_to_tensor(hidden.kernel), [-1, int(hidden.filters)])
        x = tf.matmul(flat, kernel)
    if hidden.use_bias:
        x = x + tf.convert_to_tensor(hidden.bias)
    x = tf.nn.relu(x)
    x = tf.matmul(x, tf.reshape(tf.convert_to_tensor(out.kernel), [int(hidden.filters), int(out.filters)]))
    if out.use_bias:
        x = x + tf.convert_to_tensor(out.bias)
    return x


def _scatter(values: tf.Tensor, ys: tf.Tensor, xs: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A zero ``[B, H, W, C]`` map (``H, W`` of ``like``) holding ``values [B, k, C]`` at ``(ys, xs)``."""
    batch = tf.shape(ys)[0]
    b = tf.broadcast_to(tf.range(batch)[:, tf.newaxis], tf.shape(ys))
    index = tf.stack([b, ys, xs], -1)
    shape = tf.concat([tf.shape(like)[:3], tf.shape(values)[2:]], 0)
    return tf.tensor_scatter_nd_update(tf.zeros(shape, values.dtype), index, values)


def sparse_centernet_call(
    net: Any, images: tf.Tensor, mode: str = "fused", precision: str = "float32"
) -> tuple[dict[str, tf.Tensor], int]:
    """``net(images)`` (preprocess, predict, postprocess) with the box heads evaluated at the peaks only.

    ``mode`` and ``precision`` are the :class:`~zoo.backends.inference_graph.InferenceGraph` options
    for the backbone and the centre head (the peak-only box heads run in float32). Returns the ``postprocess`` dict and the number of BatchNorm layers folded.
    Only for networks where :func:`supports_sparse_heads` holds.
    """
    from ..models.centernet import true_image_mask, top_k_locations

    preprocessed, true_shapes = net.preprocess(images)
    backbone = InferenceGraph(net.backbone_model, mode, precision)
    center_head = InferenceGraph(net.heads[_CENTER][0], mode, precision)
    features = backbone(preprocessed)
    if isinstance(features, (list, tuple)):
        (features,) = features
    center_logits = center_head(features)
    # The peaks postprocess() will find: same ops on the same heatmap.
    center = tf.sigmoid(center_logits)
    center = center * true_image_mask(center, true_shapes)
    _, ys, xs, _ = top_k_locations(center, net.config.peak_max_pool_kernel_size, net.config.max_detections)
    predictions = {_CENTER: [center_logits]}
    for name in (_SCALE, _OFFSET):
        values = _head_at(net.heads[name][0], features, ys, xs)
        predictions[name] = [_scatter(values, ys, xs, center_logits)]
    return net.postprocess(predictions, true_shapes), backbone.folded + center_head.folded
