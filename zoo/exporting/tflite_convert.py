"""Convert a network of ours to a ``.tflite`` file (float, float16, dynamic-range or int8).

The graph of :func:`zoo.exporting.tflite_graphs.detection_graph` is traced for the model's fixed input
size, its variables are frozen into constants and it is converted with built-in TFLite ops only (no
Flex delegate), so the LiteRT interpreter runs it as it is. Inputs are named ``images`` and
``true_shapes``; the outputs come in the order of :data:`OUTPUT_KEYS` (keys the model lacks left out),
which :func:`output_keys` records next to the file.

Quantization: ``float16`` stores weights as float16; ``dynamic`` stores weights as int8 and
quantizes activations on the fly; ``int8`` quantizes weights and activations with ranges calibrated
on images. The post-processing stays float (:data:`FLOAT_OPS`): its comparisons against tiny
thresholds (CenterNet's peak test is ``|heat - max_pool(heat)| < 1e-6``) and the ranking of scores
would not survive 256 levels.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import UnsupportedModelError

__all__ = ["FLOAT_OPS", "OUTPUT_KEYS", "QUANTIZATIONS", "convert", "output_keys", "resize_for_model"]

#: ``--quantize`` choices
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")

#: TFLite ops kept in float by int8 quantization (the detection post-processing)
FLOAT_OPS = ("ABS", "LESS", "LOGISTIC", "MAX_POOL_2D", "TOPK_V2", "GATHER", "GATHER_ND", "NON_MAX_SUPPRESSION_V5")

OUTPUT_KEYS = (
    "detection_boxes", "detection_classes", "detection_keypoint_scores", "detection_keypoints",
    "detection_scores", "num_detections",
)


def resize_for_model(resizer: Any, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 ``[H, W, 3]`` image -> the TFLite inputs ``(images [1,S_h,S_w,3] float32, true_shapes
    [1,3] int32)``, with the resizer the Keras model uses."""
    import tensorflow as tf

    from ..models.preprocess import resize_batch

    resized, shapes = resize_batch(resizer, tf.convert_to_tensor(image[np.newaxis], tf.uint8))
    return resized.numpy(), shapes.numpy().astype(np.int32)


def _keras_layers(net: Any) -> Iterator[Any]:
    """Every Keras layer of the network's models, nested models included (each once)."""
    import keras

    seen: set[int] = set()
    pending = [v for v in vars(net).values() if isinstance(v, keras.layers.Layer)]
    pending += [m for v in vars(net).values() if isinstance(v, dict) for ms in v.values()
                for m in (ms if isinstance(ms, (list, tuple)) else [ms]) if isinstance(m, keras.layers.Layer)]
    while pending:
        layer = pending.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        pending.extend(getattr(layer, "layers", []))


@contextmanager
def _tflite_layers(net: Any) -> Iterator[int]:
    """While tracing, two kinds of layer take an equivalent form that suits TFLite (yields how many):

    * global average pools average the rows, then the columns. TFLite's ``MEAN`` adds a whole
      feature map into one float32 sum; over the 256x256 maps of an EfficientNet's
      squeeze-and-excitation blocks, whose means nearly cancel, that rounding moves the detections
      visibly away from the Keras model's. Two reductions of one side each round far less.
    * nearest-neighbour ``UpSampling2D`` becomes one ``RESIZE_NEAREST_NEIGHBOR`` (the same values)
      instead of Keras' reshape-and-tile, which the XNNPack delegate does not take, so the
      feature pyramid ran as several delegate partitions with the tiles between them.
    """
    import keras
    import tensorflow as tf

    def two_stage(layer: Any) -> Any:
        def call(inputs: Any) -> Any:
            rows, cols = (1, 2) if layer.data_format == "channels_last" else (2, 3)
            x = tf.reduce_mean(inputs, axis=cols, keepdims=True)
            return tf.reduce_mean(x, axis=rows, keepdims=True) if layer.keepdims else \
                tf.squeeze(tf.reduce_mean(x, axis=rows, keepdims=True), axis=[rows, cols])
        return call

    def resized(layer: Any) -> Any:
        def call(inputs: Any) -> Any:
            height, width = int(inputs.shape[1]), int(inputs.shape[2])
            size = [height * int(layer.size[0]), width * int(layer.size[1])]
            return tf.raw_ops.ResizeNearestNeighbor(images=inputs, size=size, align_corners=False,
                                                    half_pixel_centers=False)
        return call

    swapped = []
    for layer in _keras_layers(net):
        if type(layer) is keras.layers.GlobalAveragePooling2D:
            swapped.append((layer, two_stage(layer)))
        elif (type(layer) is keras.layers.UpSampling2D and layer.interpolation == "nearest"
              and layer.data_format == "channels_last"):
            swapped.append((layer, resized(layer)))
    for layer, call in swapped:
        layer.call = call
    try:
        yield len(swapped)
    finally:
        for layer, _ in swapped:
            del layer.call


def _traced(net: Any, *, fast_nms: bool = True) -> Any:
    import tensorflow as tf

    from .tflite_graphs import detection_graph, input_size

    height, width = input_size(net.resizer)
    fn = tf.function(
        detection_graph(net, fast_nms=fast_nms),
        input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32, name="images"),
                         tf.TensorSpec([1, 3], tf.int32, name="true_shapes")],
        autograph=False,
    )
    with _tflite_layers(net):
        return fn.get_concrete_function()


def output_keys(concrete: Any) -> list[str]:
    """The output names of a traced detection graph in the order of the TFLite outputs."""
    return sorted(concrete.structured_outputs)


def convert(
    net: Any, *, quantize: str = "none", calibration: Iterable[np.ndarray] | None = None, name: str = "the model"
) -> tuple[bytes, list[str]]:
    """``(flatbuffer bytes, output keys in order)``. ``calibration``: uint8 ``[H, W, 3]`` images (int8).
    A graph the converter rejects raises :class:`UnsupportedModelError` naming ``name``."""
    import tensorflow as tf

    concrete = _traced(net, fast_nms=quantize != "int8")
    # Without a trackable object the converter freezes every variable into a constant; with one it
    # keeps resource variables that the interpreter cannot read back.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        if quantize == "int8":
            images = list(calibration or [])

            def representative() -> Iterator[list[np.ndarray]]:
                for image in images:
                    yield list(resize_for_model(net.resizer, image))

            converter.representative_dataset = representative
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=representative,
                debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS)),
            )
            return debugger.get_nondebug_quantized_model(), output_keys(concrete)
        return converter.convert(), output_keys(concrete)
    except Exception as exc:  # the converter raises its own error types (ConverterError, ValueError...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UnsupportedModelError(f"{name} cannot be exported to TFLite: the converter stopped at: {first}; "
                                    "use format saved_model") from exc
