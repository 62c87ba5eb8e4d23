"""The keras backend's inference graph (BatchNorm folded / fused) computes what the Keras model computes.

Small synthetic models check every rewrite exactly (1e-5 relative); the CenterNet MobileNetV2-FPN and
SSD FPNLite stand-in archives check the real networks end to end against the unoptimised backend.
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.backends.centernet_sparse import supports_sparse_heads
from zoo.backends.inference_graph import InferenceGraph, count_folded, supports_folding
from zoo.backends.keras_backend import KerasBackend
from zoo.errors import ConfigError
from zoo.loading import load

TARBALLS = FIXTURES / "tarballs"
CENTERNET = "centernet_mobilenetv2fpn_512x512_coco17_od"
SSD = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
MODES = ("fused", "kernel")


def _randomize_batchnorms(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial moving statistics, gamma and beta, so a wrong fold cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = int(layer.moving_mean.shape[0])
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype(np.float32))
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0, 0.3, n).astype(np.float32))


def _all_layers(model: keras.Model) -> list:
    out = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def _toy_model() -> keras.Model:
    """Every rewrite once: Conv2D/Depthwise/Separable + BN (+ReLU6 / ReLU), a conv feeding two layers,
    a BN after an Add (not foldable), a BN without gamma/beta, a nested functional and a Sequential."""
    inner_in = keras.Input((None, None, 8))
    y = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, use_bias=False)(inner_in)
    y = keras.layers.BatchNormalization(epsilon=1e-3)(y)
    y = keras.layers.ReLU(6.0)(y)
    inner = keras.Model(inner_in, y, name="inner")

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization(epsilon=1e-3)(x)
    x = keras.layers.ReLU(6.0)(x)
    shared = keras.layers.Conv2D(8, 1, activation="relu")(x)  # two consumers: must not be folded
    x = keras.layers.Add()([keras.layers.BatchNormalization(center=False, scale=False)(shared), shared])
    x = keras.layers.BatchNormalization()(x)  # after an Add: runs as the Keras layer
    x = inner(x)
    x = keras.layers.SeparableConv2D(12, 3, padding="same", dilation_rate=1)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    head = keras.Sequential(
        [keras.Input((None, None, 12)), keras.layers.Conv2D(5, 3, strides=2, padding="valid"),
         keras.layers.BatchNormalization(), keras.layers.ReLU(max_value=4.0)], name="head",
    )
    out = {"head": head(x), "features": x}
    model = keras.Model(inp, out)
    _randomize_batchnorms(model)
    return model


@pytest.fixture(scope="module")
def toy() -> keras.Model:
    return _toy_model()


@pytest.mark.parametrize("mode", MODES)
def test_toy_model_matches_keras_inference(toy: keras.Model, mode: str) -> None:
    x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (2, 17, 23, 3)).astype(np.float32))
    expected = toy(x, training=False)
    graph = InferenceGraph(toy, mode)
    got = tf.function(graph, autograph=False)(x)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
    # Conv1+BN, depthwise+BN (nested), separable+BN, head conv+BN (Sequential); not the shared conv's.
    assert graph.folded == 4
    assert count_folded(toy) == 4


def test_training_flag_and_unsupported_models_pass_through(toy: keras.Model) -> None:
    x = tf.ones((1, 8, 8, 3))
    graph = InferenceGraph(toy)
    np.testing.assert_allclose(graph(x, training=True)["head"], toy(x, training=True)["head"], rtol=1e-5, atol=1e-6)
    assert not supports_folding(object()) and supports_folding(toy)
    with pytest.raises(TypeError, match="functional"):
        InferenceGraph(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="mode"):
        InferenceGraph(toy, "fast")


class _Net:
    """Minimal network object with the interface the keras backend needs."""

    def __init__(self, model: keras.Model) -> None:
        self.keras_model = model

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        x = tf.cast(images, tf.float32) / 255.0
        out = self.keras_model(x, training=False)["head"]
        score = tf.reduce_mean(out, axis=[1, 2, 3])
        return {
            "detection_boxes": tf.zeros([tf.shape(score)[0], 1, 4]),
            "detection_scores": score[:, tf.newaxis],
            "detection_classes": tf.zeros([tf.shape(score)[0], 1], tf.int32),
            "num_detections": tf.ones([tf.shape(score)[0]], tf.int32),
        }


@pytest.mark.parametrize("mode", MODES)
def test_traced_graph_follows_weight_changes(mode: str) -> None:
    """No stale inference graph: assigning weights (as training does) shows in the next call."""
    model = _toy_model()
    net = _Net(model)
    fast = KerasBackend(net, fold_batchnorm=mode)
    plain = KerasBackend(net, fold_batchnorm=False)
    batch = np.random.default_rng(2).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    before = fast.infer(batch)["detection_scores"]
    np.testing.assert_allclose(before, plain.infer(batch)["detection_scores"], rtol=1e-5, atol=1e-6)
    assert fast.fold_batchnorm == mode and fast.folded_batchnorms == 4 and plain.folded_batchnorms == 0
    assert net.keras_model is model  # the trainable model is back in place after tracing
    _randomize_batchnorms(model, seed=7)
    for layer in _all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            layer.kernel.assign(layer.kernel * 1.5)
    after = fast.infer(batch)["detection_scores"]
    assert fast.trace_count == 1
    assert not np.allclose(after, before, rtol=1e-3)
    np.testing.assert_allclose(after, plain.infer(batch)["detection_scores"], rtol=1e-5, atol=1e-6)


def test_fold_option_is_validated_and_skipped_for_non_functional_models() -> None:
    with pytest.raises(ConfigError, match="fold_batchnorm"):
        KerasBackend(_Net(_toy_model()), fold_batchnorm="fast")

    class Opaque:  # not a functional keras.Model: runs as is
        def __call__(self, x, training=False):
            return {"head": x[..., :1]}

    backend = KerasBackend(_Net(Opaque()))  # type: ignore[arg-type]
    assert backend.fold_batchnorm is None
    out = backend.infer(np.full((1, 4, 4, 3), 51, np.uint8))
    np.testing.assert_allclose(out["detection_scores"], [[0.2]], rtol=1e-6)


# ---------------------------------------------------------------------- the real networks
@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speedup_cache")


def _heads(backend: KerasBackend, image: np.ndarray, graph_mode: str | None) -> dict[str, np.ndarray]:
    net = backend.net
    x, _ = net.preprocess(tf.constant(image[np.newaxis]))
    if graph_mode is None:
        fn = tf.function(lambda t: net.keras_model(t, training=False), autograph=False)
    else:
        fn = tf.function(InferenceGraph(net.keras_model, graph_mode), autograph=False)
    return {k: v.numpy() for k, v in fn(x).items()}


@pytest.mark.parametrize("name", [CENTERNET, SSD])
def test_real_networks_match_the_unoptimised_model(name: str, cache: Path, image: np.ndarray) -> None:
    det = load(str(TARBALLS / f"{name}.tar.gz"), backend="keras", cache_dir=cache)
    runner = det.runner
    assert runner.fold_batchnorm == "fused"
    assert runner.sparse_heads == supports_sparse_heads(runner.net) == (name == CENTERNET)
    plain = KerasBackend(runner.net, fold_batchnorm=False)
    kernel = KerasBackend(runner.net, fold_batchnorm="kernel")
    batch = image[np.newaxis]
    ref = plain.infer(batch)
    fused_out = runner.infer(batch)
    assert runner.folded_batchnorms >= 50  # every conv + BN pair of the backbone
    # Same detections in the same order; SSD's stand-in amplifies rounding (see below), hence 1e-4 there
    # (the tolerance its agreement with the exported SavedModel is tested with).
    tol = 1e-5 if name == CENTERNET else 1e-4
    _same_detections(fused_out, ref, tol)
    # "kernel" changes rounding only: scores agree; detections agree up to the order of near ties.
    kernel_out = kernel.infer(batch)
    np.testing.assert_allclose(np.sort(kernel_out["detection_scores"]), np.sort(ref["detection_scores"]), atol=tol)
    # Raw network outputs: within 1e-5 relative for CenterNet; SSD's stand-in weights amplify float
    # rounding (a 1e-7 relative input change moves its outputs ~1e-4), so there the bound is that noise.
    expected = _heads(plain, image, None)
    net = runner.net
    x, _ = net.preprocess(tf.constant(batch))
    nudged = {k: v.numpy() for k, v in tf.function(lambda t: net.keras_model(t, training=False))(x * (1 + 1e-7)).items()}
    for mode in MODES:
        got = _heads(plain, image, mode)
        for key, want in expected.items():
            scale = float(np.abs(want).max())
            err = float(np.abs(got[key] - want).max()) / scale
            noise = float(np.abs(nudged[key] - want).max()) / scale
            assert err <= max(1e-5, 3 * noise), (mode, key, err, noise)
            if name == CENTERNET:
                assert err <= 1e-5, (mode, key, err)


def _same_detections(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], tol: float) -> None:
    """Same detections (class, box, score within ``tol``) in the same order, except that two whose
    reference scores tie within ``tol`` may trade places (SSD's stand-in moves scores by ~1e-5 for a
    1e-7 relative change anywhere in the network, more than some gaps between neighbouring scores)."""
    np.testing.assert_array_equal(got["num_detections"], ref["num_detections"])
    np.testing.assert_allclose(got["detection_scores"], ref["detection_scores"], atol=tol)
    ref_scores = ref["detection_scores"][0]
    for i, (box, cls) in enumerate(zip(got["detection_boxes"][0], got["detection_classes"][0])):
        same = (np.abs(ref["detection_boxes"][0] - box).max(axis=1) <= tol) & (ref["detection_classes"][0] == cls)
        ranks = np.flatnonzero(same)
        assert ranks.size, (i, box, cls)  # the detection exists in the reference
        j = int(ranks[np.argmin(np.abs(ranks - i))])
        assert j == i or abs(float(ref_scores[j]) - float(ref_scores[i])) <= tol, (i, j, ref_scores[i], ref_scores[j])


def _matched(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], image_index: int, first: int) -> None:
    """Each of ``got``'s first detections is among ``ref``'s (same class, box within 1e-4): near-tied
    scores may come out in another order."""
    ref_boxes = ref["detection_boxes"][image_index]
    ref_classes = ref["detection_classes"][image_index]
    for box, cls in zip(got["detection_boxes"][image_index][:first], got["detection_classes"][image_index][:first]):
        close = (np.abs(ref_boxes - box).max(axis=1) <= 1e-4) & (ref_classes == cls)
        assert close.any(), (box, cls)


def test_centernet_sparse_box_heads(cache: Path, image: np.ndarray) -> None:
    """Box heads evaluated at the peaks only: same detections for a batch, and live weights."""
    det = load(str(TARBALLS / f"{CENTERNET}.tar.gz"), backend="keras", cache_dir=cache)
    sparse, net = det.runner, det.runner.net
    dense = KerasBackend(net, sparse_heads=False)
    plain = KerasBackend(net, fold_batchnorm=False)
    assert sparse.sparse_heads and not dense.sparse_heads and not plain.sparse_heads
    batch = np.stack([image, image[:, ::-1]])
    ref = plain.infer(batch)
    got = sparse.infer(batch)
    np.testing.assert_allclose(np.sort(got["detection_scores"]), np.sort(ref["detection_scores"]), atol=1e-5)
    for i in range(2):
        _matched(got, ref, i, first=90)
    np.testing.assert_allclose(dense.infer(batch)["detection_boxes"][0], ref["detection_boxes"][0], atol=1e-5)
    # A changed box head (as after fine-tuning) is read by the same traced graph.
    bias = net.heads["box/scale"][0].layers[-1].bias
    saved = bias.numpy()
    try:
        bias.assign(saved + 2.0)
        ref2 = plain.infer(batch[:1])
        got2 = sparse.infer(batch[:1])
        assert not np.allclose(got2["detection_boxes"], got["detection_boxes"][:1], atol=1e-3)
        np.testing.assert_allclose(got2["detection_boxes"], ref2["detection_boxes"], atol=1e-5)
    finally:
        bias.assign(saved)
    assert sparse.trace_count == 1


def test_rewrite_failure_falls_back_to_the_keras_model() -> None:
    """A net that needs more of its model than calling it gets the plain model, and says so (a warning)."""

    class Picky(_Net):
        def __call__(self, images):
            self.keras_model.get_layer(index=0)  # an InferenceGraph has no get_layer
            return super().__call__(images)

    model = _toy_model()
    backend = KerasBackend(Picky(model))
    batch = np.full((1, 8, 8, 3), 9, np.uint8)
    with pytest.warns(RuntimeWarning, match="running the Keras model as is"):  # said, not silent
        out = backend.infer(batch)
    assert backend.fold_batchnorm is None and "running the Keras model as is" in backend.fold_fallback_reason
    expected = KerasBackend(_Net(model), fold_batchnorm=False).infer(batch)
    np.testing.assert_allclose(out["detection_scores"], expected["detection_scores"], rtol=1e-6)
