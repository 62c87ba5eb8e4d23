"""FLOP counting of traced graphs and the peak micro-benchmark."""
from __future__ import annotations

import tensorflow as tf

from zoo.bench.flops import detector_flops, graph_flops, measure_peak


def _graph(fn, *specs) -> tf.Graph:
    return tf.function(fn, autograph=False).get_concrete_function(*specs).graph


def test_convolutions_and_matmuls_are_counted_exactly() -> None:
    kernel = tf.ones([3, 3, 8, 16])
    depthwise = tf.ones([5, 5, 16, 2])
    weights = tf.ones([32, 10])

    def net(x):
        y = tf.nn.conv2d(x, kernel, 2, "SAME")  # [1, 16, 16, 16]: 2*16*16*16*9*8
        y = tf.nn.depthwise_conv2d(y, depthwise, [1, 1, 1, 1], "SAME")  # [1, 16, 16, 32]: 2*16*16*32*25
        z = tf.reshape(y, [-1, 32])  # [256, 32]
        z = tf.matmul(z, weights)  # 2*256*10*32
        return tf.einsum("nk,kj->nj", z, tf.ones([10, 3])) + 1.0  # 2*256*3*10; the add is not counted

    counts = graph_flops(_graph(net, tf.TensorSpec([1, 32, 32, 8])))
    expected = 2 * 16 * 16 * 16 * 9 * 8 + 2 * 16 * 16 * 32 * 25 + 2 * 256 * 10 * 32 + 2 * 256 * 3 * 10
    assert counts == {"flops": expected, "ops_counted": 4, "ops_unknown_shape": 0}


def test_unknown_shapes_are_reported_and_detector_flops_traces_a_fixed_shape() -> None:
    kernel = tf.ones([1, 1, 3, 4])

    def serve(images):
        return {"out": tf.nn.conv2d(tf.cast(images, tf.float32), kernel, 1, "VALID")}

    dynamic = graph_flops(_graph(serve, tf.TensorSpec([None, None, None, 3], tf.uint8)))
    assert dynamic["flops"] == 0 and dynamic["ops_unknown_shape"] == 1
    fixed = detector_flops(serve, (6, 5, 3), batch=2)
    assert fixed["flops"] == 2 * 2 * 6 * 5 * 4 * 3 and fixed["flops_per_image"] == 6 * 5 * 4 * 3 * 2


def test_peak_is_a_positive_rate() -> None:
    peak = measure_peak(0.05, size=128)
    assert peak["peak_flops_per_s"] == max(peak["matmul_flops_per_s"], peak["conv3x3_flops_per_s"]) > 1e6
