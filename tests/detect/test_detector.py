"""Detector: zoo.load -> one detect() for every kind of input; a real keras.Model; class re-init."""
from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.backends.keras_backend import KerasBackend
from zoo.detections import Detections
from zoo.errors import CheckpointMismatchError, InputError, UnsupportedModelError
from zoo.loading import load

TARBALL = FIXTURES / "tarballs" / "centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("detector_cache")


@pytest.fixture(scope="module")
def det(cache: Path):
    """Keras detector from a zoo-layout archive (extracted into a private cache)."""
    return load(str(TARBALL), cache_dir=cache)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))


def test_load_restores_strictly_and_exposes_spec(det) -> None:
    assert det.backend == "keras"
    assert det.restore_report.ok and not det.restore_report.skipped
    assert len(det.restore_report.matched) == len(det.model.weights)
    assert (det.model_dir / "pipeline.config").is_file()
    assert isinstance(det.model, keras.Model)
    assert det.spec is not None and det.spec.name == "centernet_mobilenetv2fpn_512x512_coco17_od"


def test_single_image_gives_one_detections(det, image: np.ndarray) -> None:
    result = det.detect(image)
    assert isinstance(result, Detections)
    assert result.image_size == (480, 640) and 0 < len(result) <= 100
    assert result.classes.dtype == np.int64 and result.classes.min() >= 1  # 1-based COCO ids
    assert np.all(result.boxes[:, 2] <= 640) and np.all(result.boxes[:, 3] <= 480)
    assert np.all(np.diff(result.scores) <= 0)
    assert len(result.labels) == len(result)


def test_path_pil_and_array_agree(det, image: np.ndarray) -> None:
    from_array = det.detect(image)
    for other in (det.detect(INPUT_IMAGE), det.detect(str(INPUT_IMAGE)), det.detect(Image.open(INPUT_IMAGE))):
        np.testing.assert_allclose(other.boxes_normalized, from_array.boxes_normalized, atol=1e-6)
        np.testing.assert_array_equal(other.classes, from_array.classes)


def test_lists_and_batches_give_lists(det, image: np.ndarray) -> None:
    small = image[:200, :300]
    results = det.detect([image, small])
    assert isinstance(results, list) and [r.image_size for r in results] == [(480, 640), (200, 300)]
    batch = det.detect(tf.constant(np.stack([small, small])))
    assert isinstance(batch, list) and len(batch) == 2 and batch[0].image_size == (200, 300)
    one = det.detect(small[np.newaxis])  # a batch of one is still a batch
    assert isinstance(one, list) and len(one) == 1


def test_grayscale_and_rgba_are_converted(det, image: np.ndarray) -> None:
    gray = det.detect(image[:, :, 0])
    rgba = det.detect(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]))
    assert gray.image_size == rgba.image_size == (480, 640)
    np.testing.assert_allclose(rgba.boxes_normalized, det.detect(image).boxes_normalized, atol=1e-6)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4, 4, 4, 3), np.uint8), "rank"),
        (np.zeros((8, 8, 2), np.uint8), "channels"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 3), bool), "dtype"),
        ("/nonexistent/image.png", "does not exist"),
        ([], "empty"),
    ],
)
def test_bad_input_raises_input_error(det, bad, message: str) -> None:
    with pytest.raises(InputError, match=message):
        det.detect(bad)


def test_threshold_and_max_detections(det, image: np.ndarray) -> None:
    full = det.detect(image)
    cut = det.detect(image, score_threshold=float(full.scores[4]), max_detections=3)
    assert len(cut) == 3 and np.all(cut.scores >= full.scores[4])
    np.testing.assert_allclose(cut.scores, full.scores[:3])


def test_timed_detect_reports_stages(det, image: np.ndarray) -> None:
    result, timings = det.timed_detect(image)
    assert isinstance(result, Detections)
    assert set(timings) == {"preprocess_s", "inference_s", "postprocess_s"}
    assert all(v >= 0 for v in timings.values()) and timings["inference_s"] > 0


def test_one_trace_for_every_image_size(det, image: np.ndarray) -> None:
    runner = det.runner
    assert isinstance(runner, KerasBackend)
    before = runner.trace_count
    for h, w in ((120, 160), (333, 217), (480, 640)):
        det.detect(image[:h, :w])
    det.detect(np.stack([image[:50, :70]] * 3))
    assert runner.trace_count == max(before, 1) == 1


def test_model_is_trainable_and_saveable(det, tmp_path: Path) -> None:
    model = det.model
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    out = model(x)
    assert out["object_center_0"].shape == (2, 16, 16, 90)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.compile(optimizer=keras.optimizers.SGD(1e-3), loss={"object_center_0": "mse"})
    target = {"object_center_0": np.zeros((2, 16, 16, 90), np.float32)}
    before = [w.copy() for w in clone.get_weights()]
    history = clone.fit(x, target, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, clone.get_weights()))
    path = tmp_path / "centernet.keras"
    clone.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        reloaded(x, training=False)["box/scale_0"], clone(x, training=False)["box/scale_0"], rtol=1e-5, atol=1e-5
    )


def test_num_classes_reinitialises_class_heads_only(det, cache: Path) -> None:
    small = load(str(TARBALL), cache_dir=cache, num_classes=3)
    report = small.restore_report
    assert report.ok and len(report.skipped) == 2
    assert all("num_classes=3" in why for why in report.skipped.values())
    assert all("object_center" in key for key in report.skipped)
    assert small.model(np.zeros((1, 64, 64, 3), np.float32))["object_center_0"].shape[-1] == 3
    # Everything else was restored from the checkpoint.
    ref = det.net.checkpoint_map()
    for key, var in small.net.checkpoint_map().items():
        if key not in report.skipped:
            np.testing.assert_array_equal(np.asarray(var), np.asarray(ref[key]))
    assert small.detect(np.zeros((64, 64, 3), np.uint8)).classes.max() <= 3


def test_strict_mismatch_raises_one_report(det, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(det.model_dir, folder, ignore=shutil.ignore_patterns("saved_model"))
    config = folder / "pipeline.config"
    config.write_text(config.read_text().replace("num_classes: 90", "num_classes: 80", 1))
    with pytest.raises(CheckpointMismatchError) as info:
        load(folder)
    assert "[1, 1, 256, 90] vs [1, 1, 256, 80]" in str(info.value)
    relaxed = load(folder, strict=False)
    assert len(relaxed.restore_report.shape_mismatches) == 2 and relaxed.restore_report.assigned


@pytest.mark.parametrize(
    "model_block, message",
    [
        ('model { yolo { num_classes: 2 } }', "meta-architecture 'yolo'"),
        ('model { center_net { num_classes: 2 feature_extractor { type: "vgg_16" } '
         'image_resizer { fixed_shape_resizer { height: 64 width: 64 } } } }', "'vgg_16'"),
    ],
)
def test_models_without_keras_implementation_suggest_saved_model(tmp_path: Path, model_block: str, message: str) -> None:
    (tmp_path / "pipeline.config").write_text(model_block)
    with pytest.raises(UnsupportedModelError, match=message) as info:
        load(tmp_path)
    assert "backend='saved_model'" in str(info.value)


class _TinyNet:
    """A stand-in network for the jit option: ``host_op`` adds an op XLA cannot compile."""

    def __init__(self, host_op: bool) -> None:
        inp = keras.Input((None, None, 3))
        self.keras_model = keras.Model(inp, {"x": keras.layers.Conv2D(1, 1)(inp)})
        self.host_op = host_op

    def preprocess(self, images):
        x = tf.cast(images, tf.float32)
        if self.host_op:
            x = x + tf.reduce_sum(tf.numpy_function(lambda a: a, [x], tf.float32)) * 0.0
        return x, tf.shape(x)[:3][tf.newaxis]

    def predict(self, x):
        return self.keras_model(x)

    def __call__(self, images):
        x, shapes = self.preprocess(images)
        return self.postprocess(self.predict(x), shapes)

    def postprocess(self, predictions, shapes):
        score = tf.reduce_mean(predictions["x"], axis=[1, 2, 3])
        return {
            "detection_boxes": tf.zeros([tf.shape(score)[0], 1, 4]),
            "detection_scores": score[:, tf.newaxis],
            "detection_classes": tf.zeros([tf.shape(score)[0], 1], tf.int32),
            "num_detections": tf.ones([tf.shape(score)[0]], tf.int32),
        }


def test_jit_compile_option_and_clean_fallback() -> None:
    batch = np.full((1, 8, 8, 3), 7, np.uint8)
    net = _TinyNet(False)
    plain = KerasBackend(net).infer(batch)
    jitted = KerasBackend(net, jit_compile=True)
    np.testing.assert_allclose(jitted.infer(batch)["detection_scores"], plain["detection_scores"], rtol=1e-6)
    assert jitted.jit_compile and jitted.jit_fallback_reason is None
    fallback = KerasBackend(_TinyNet(True), jit_compile=True)
    out = fallback.infer(batch)
    assert out["detection_scores"].shape == (1, 1)
    assert not fallback.jit_compile and "XLA" in fallback.jit_fallback_reason


def test_cli_detect_draws_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    out = tmp_path / "annotated.png"
    code = main(["detect", str(INPUT_IMAGE), "--model", str(TARBALL), "--threshold", "0.5", "--out", str(out), "--json"])
    assert code == 0
    payload = __import__("json").loads(capsys.readouterr().out)
    assert payload[0]["annotated"] == str(out) and payload[0]["image_size"] == [480, 640]
    assert payload[0]["scores"] and min(payload[0]["scores"]) >= 0.5
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == (480, 640, 3)
    assert not np.array_equal(drawn, np.asarray(Image.open(INPUT_IMAGE).convert("RGB")))  # boxes were drawn


def test_cli_detect_bad_image_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zoo.cli import main

    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["detect", str(bad), "--model", str(TARBALL)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("odzoo detect: error:") and "cannot read image" in err and "\n" not in err


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"score_threshold": float("nan")}, "score_threshold must be a finite number"),
        ({"score_threshold": -0.1}, "score_threshold must be at least 0"),
        ({"max_detections": -1}, "max_detections must be at least 1"),
        ({"max_detections": 0}, "max_detections must be at least 1"),
    ],
)
def test_detect_arguments_are_checked_before_the_images(det, kwargs: dict, message: str) -> None:
    from zoo.errors import ArgumentError

    for call in (det.detect, det.timed_detect):
        with pytest.raises(ArgumentError, match=message):
            call(None, **kwargs)  # the argument is refused first, before the (also bad) image
