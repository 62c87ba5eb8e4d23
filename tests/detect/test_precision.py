"""``precision="float16"/"bfloat16"`` on the keras backend: off by default, checked, and its accuracy cost measured."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.backends.inference_graph import InferenceGraph
from zoo.backends.keras_backend import KerasBackend
from zoo.agreement import detection_agreement
from zoo.errors import ConfigError
from zoo.loading import load

CENTERNET = FIXTURES / "tarballs" / "centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz"


def _model() -> keras.Model:
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, keras.layers.Conv2D(8, 1)(x)])  # a Keras layer between rewritten ones
    return keras.Model(inp, x)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
@pytest.mark.parametrize("mode", ["fused", "kernel"])
def test_low_precision_graph_is_close_and_returns_float32(precision: str, mode: str) -> None:
    model = _model()
    x = tf.constant(np.random.default_rng(0).uniform(0, 1, (1, 12, 10, 3)).astype(np.float32))
    expected = model(x, training=False).numpy()
    got = tf.function(InferenceGraph(model, mode, precision), autograph=False)(x)
    assert got.dtype == tf.float32
    tol = 2e-2 if precision == "float16" else 1e-1
    np.testing.assert_allclose(got.numpy(), expected, rtol=tol, atol=tol * float(np.abs(expected).max()))
    assert not np.array_equal(got.numpy(), expected)  # really computed in the lower precision


def test_precision_is_checked_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        load(str(CENTERNET), precision="float8", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="backend='keras'"):
        load(str(CENTERNET), backend="saved_model", precision="float16", cache_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing fetched: the arguments were refused first
    with pytest.raises(ValueError, match="precision"):
        InferenceGraph(_model(), "fused", "half")


def test_float16_detections_agree_with_float32_on_the_reference_image(tmp_path: Path) -> None:
    image = np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))[np.newaxis]
    det = load(str(CENTERNET), cache_dir=tmp_path)
    assert det.runner.precision == "float32"  # the default never changes outputs
    reference = det.runner.infer(image)
    half = load(str(CENTERNET), cache_dir=tmp_path, precision="float16")
    assert half.runner.precision == "float16"
    got = half.runner.infer(image)
    assert got["detection_scores"].dtype == np.float32
    agreement = detection_agreement(reference, got, top_k=20)
    assert agreement["compared"] == 20
    assert agreement["matched"] >= 0.9 and agreement["mean_iou"] >= 0.9 and agreement["max_score_diff"] <= 0.05
    assert not np.array_equal(got["detection_scores"], reference["detection_scores"])
    with pytest.raises(ConfigError, match="precision"):
        KerasBackend(det.net, precision="float64")
    with pytest.raises(ConfigError, match="inference graph"):
        KerasBackend(det.net, precision="float16", fold_batchnorm=False)


def test_agreement_counts_matches_and_order() -> None:
    boxes = np.array([[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1]]], np.float32)
    ref = {"detection_boxes": boxes, "detection_scores": np.array([[0.9, 0.8, 0.7]]),
           "detection_classes": np.array([[1.0, 2.0, 1.0]]), "num_detections": np.array([3.0])}
    assert detection_agreement(ref, ref) == {"compared": 3, "matched": 1.0, "same_order": 1.0, "mean_iou": 1.0,
                                             "max_box_diff": 0.0, "max_score_diff": 0.0, "max_score_rel": 0.0}
    swapped = {**ref, "detection_scores": np.array([[0.8, 0.9, 0.7]])}  # first two trade places
    moved = {**ref, "detection_classes": np.array([[1.0, 3.0, 1.0]])}  # the second changes class
    assert detection_agreement(ref, swapped)["same_order"] == pytest.approx(1 / 3)
    assert detection_agreement(ref, swapped)["matched"] == 1.0
    assert detection_agreement(ref, moved)["matched"] == pytest.approx(2 / 3)
