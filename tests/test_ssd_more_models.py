"""SSD ResNet50 V1 FPN (RetinaNet), SSD MobileNet V1 FPN and SSD MobileNet V2 in Keras 3 against the
original TF2 OD API.

For each model a checkpoint is synthesized from the zoo manifest (seed 0 + the fixture overrides),
restored strictly (every checkpoint key consumed, every model variable assigned), and one forward
pass on ``inputs/A.png`` is compared with ``reference.npz``: predict tensors within 1e-4 relative L2,
detections with the same classes and anchors, boxes and scores to float rounding. The 101/152-layer
and 1024x1024 ResNet variants run the same code (checked once by hand; too slow for the suite).
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CONFIGS, FIXTURES, INPUT_IMAGE, MANIFESTS
from PIL import Image

from zoo.checkpoint import restore
from zoo.errors import CheckpointMismatchError, ConfigError, UnsupportedModelError
from zoo.models.layers import FusedBatchNormalization, with_fused_batch_norm
from zoo.models.ssd import SSD, build_ssd
from zoo.pipeline_config import load, model_config, parse

from .references import check_reference, write_reference_checkpoint

RESNET50 = "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8"
MOBILENET_V1_FPN = "ssd_mobilenet_v1_fpn_640x640_coco17_tpu-8"
MOBILENET_V2 = "ssd_mobilenet_v2_320x320_coco17_tpu-8"
PREDICT_KEYS = ("box_encodings", "class_predictions_with_background", "anchors")
# SSD MobileNet V2's last map is 1x1: its BatchNorm statistics were calibrated on a single value per
# channel, so it normalizes by ~sqrt(epsilon) after a near-total cancellation. Float32 rounding alone
# moves it 1.4e-1 (relative L2) from a float64 evaluation of the same network, in the original as
# here; the two float32 implementations agree to 4.3e-3.
ILL_CONDITIONED = {(MOBILENET_V2, "predict/feature_maps_5"): 1e-2}


def _msg(name: str):
    arch, msg = model_config(load(CONFIGS / name / "pipeline.config"))
    assert arch == "ssd"
    return msg


def _build(name: str, **kw) -> SSD:
    return build_ssd(_msg(name), **kw)


def _image() -> np.ndarray:
    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))[np.newaxis]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """name -> synthesized checkpoint folder, written once per session."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            folder = tmp_path_factory.mktemp(name)
            write_reference_checkpoint(name, folder)
            made[name] = folder
        return made[name]

    return get


class Run:
    """One model, its checkpoint, and one forward pass."""

    def __init__(self, name: str, checkpoint: Path) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.model = _build(name)
        self.report = restore(self.model.checkpoint_map(), checkpoint, model_variables=self.model.keras_model.weights)
        self.preprocessed, self.true_shapes = self.model.preprocess(tf.constant(_image()))
        self.predictions = self.model.predict(self.preprocessed)
        self.detections = {k: v.numpy() for k, v in self.model.postprocess(self.predictions, self.true_shapes).items()}
        ref = np.load(FIXTURES / name / "reference.npz")
        self.reference = {k: ref[k] for k in ref.files}


@pytest.fixture(scope="module", params=[RESNET50, MOBILENET_V1_FPN, MOBILENET_V2])
def run(request: pytest.FixtureRequest, checkpoints) -> Run:
    return Run(request.param, checkpoints(request.param))


def test_strict_restore_consumes_every_key(run: Run) -> None:
    assert run.report.ok and run.report.assigned
    assert run.report.missing == [] and run.report.unexpected == []
    stored = tf.train.load_checkpoint(str(run.checkpoint / "ckpt-0")).get_variable_to_shape_map()
    assert len(run.report.matched) == len(stored) - 2  # minus the object graph and save_counter
    assert len(run.model.checkpoint_map()) == len(run.report.matched) == len(run.model.keras_model.weights)


def test_preprocessing_matches(run: Run) -> None:
    np.testing.assert_array_equal(run.true_shapes.numpy(), run.reference["true_image_shapes"])
    check_reference(run.reference, "preprocessed_inputs", run.preprocessed.numpy(), tol=1e-6)


def test_predictions_match(run: Run) -> None:
    for key in PREDICT_KEYS:
        check_reference(run.reference, f"predict/{key}", np.asarray(run.predictions[key]))
    maps = run.predictions["feature_maps"]
    meta = json.loads((FIXTURES / run.name / "meta.json").read_text())
    assert len(maps) == sum(1 for k in meta["predict_keys"] if k.startswith("feature_maps_"))
    for i, feature in enumerate(maps):
        key = f"predict/feature_maps_{i}"
        check_reference(run.reference, key, feature.numpy(), tol=ILL_CONDITIONED.get((run.name, key), 1e-4))


def test_detections_match(run: Run) -> None:
    ref, det = run.reference, run.detections
    np.testing.assert_array_equal(det["num_detections"], ref["postprocess/num_detections"])
    np.testing.assert_array_equal(det["detection_classes"], ref["postprocess/detection_classes"])
    np.testing.assert_array_equal(det["detection_anchor_indices"], ref["postprocess/detection_anchor_indices"])
    np.testing.assert_allclose(det["detection_scores"], ref["postprocess/detection_scores"], atol=2e-4)
    np.testing.assert_allclose(det["detection_boxes"], ref["postprocess/detection_boxes"], atol=1e-4)
    for key in ("raw_detection_boxes", "raw_detection_scores", "detection_multiclass_scores"):
        check_reference(ref, f"postprocess/{key}", det[key])


@pytest.mark.parametrize("name", ["ssd_resnet101_v1_fpn_640x640_coco17_tpu-8", "ssd_resnet152_v1_fpn_640x640_coco17_tpu-8"])
def test_deeper_resnets_have_the_manifest_layout(name: str) -> None:
    """Every checkpoint variable of the 101/152-layer models, with its shape, and nothing else."""
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    want = {k.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE"): tuple(shape) for k, shape, _ in manifest["variables"]
            if not k.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}
    model = _build(name)
    got = {k: tuple(v.shape) for k, v in model.checkpoint_map().items()}
    assert got == want
    assert len(model.keras_model.weights) == len(got)


def test_class_heads_depend_on_num_classes(run: Run) -> None:
    keys = run.model.class_dependent_keys()
    levels = 6 if run.name == MOBILENET_V2 else 1  # per-level heads vs one weight-shared head
    assert len(keys) == 2 * levels and all("_class_predictor_layers/0/" in k for k in keys)


def test_convolutional_predictor_refuses_other_classes_then_skips_them(checkpoints) -> None:
    checkpoint = checkpoints(MOBILENET_V2)
    other = _build(MOBILENET_V2, num_classes=20)
    assert [int(h.weights[-1].shape[0]) for h in other.box_predictor.class_heads] == [3 * 21] + [6 * 21] * 5
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        restore(other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights)
    report = restore(
        other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights,
        skip={k: "class count differs" for k in other.class_dependent_keys()},
    )
    assert report.ok and len(report.skipped) == 12


def test_mobilenet_v2_graph_mode_any_size_and_batch(checkpoints) -> None:
    """Traced once for any batch and image size; odd intermediate sizes (300 -> 75 -> 38) stay 'same'."""
    model = _build(MOBILENET_V2)
    restore(model.checkpoint_map(), checkpoints(MOBILENET_V2), model_variables=model.keras_model.weights)
    fn = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    image = _image()
    batch = np.concatenate([image, np.ascontiguousarray(image[:, ::-1])], axis=0)
    out = {k: v.numpy() for k, v in fn(tf.constant(batch)).items()}
    ref = np.load(FIXTURES / MOBILENET_V2 / "reference.npz")
    np.testing.assert_array_equal(out["detection_anchor_indices"][0], ref["postprocess/detection_anchor_indices"][0])
    np.testing.assert_allclose(out["detection_boxes"][0], ref["postprocess/detection_boxes"][0], atol=1e-4)
    assert not np.array_equal(out["detection_anchor_indices"][1], out["detection_anchor_indices"][0])
    assert fn(tf.constant(image[:, ::3, ::3]))["raw_detection_boxes"].shape == (1, 1917, 4)
    assert len(fn._list_all_concrete_functions()) == 1


def test_fused_batch_norm_is_batch_norm_at_inference_and_trains_as_keras() -> None:
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.1, 3, 8)]
    for shape in ((2, 5, 7, 8), (2, 7, 8)):  # the fused kernel, and the Keras fallback for other ranks
        x = rng.normal(size=shape).astype(np.float32)
        plain = keras.layers.BatchNormalization(epsilon=1e-3)
        fused = FusedBatchNormalization(epsilon=1e-3)
        for layer in (plain, fused):
            layer.build(x.shape)
            layer.set_weights(weights)
        np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), rtol=1e-5, atol=1e-5)
        assert not np.allclose(fused(x, training=True), fused(x, training=False), atol=1e-3)


def test_with_fused_batch_norm_keeps_structure() -> None:
    inputs = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(4, 3, name="c")(inputs)
    b = keras.layers.BatchNormalization(name="bn")(a)
    model = keras.Model(inputs, [keras.layers.ReLU(name="r")(b), a])
    copy = with_fused_batch_norm(model)
    assert [layer.name for layer in copy.layers[1:]] == [layer.name for layer in model.layers[1:]] == ["c", "bn", "r"]
    assert isinstance(copy.get_layer("bn"), FusedBatchNormalization)
    assert copy.get_layer("c") is not model.get_layer("c")
    assert [w.shape for w in copy.weights] == [w.shape for w in model.weights]


def _edited(name: str, *edits: tuple[str, str]):
    text = (CONFIGS / name / "pipeline.config").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    _, msg = model_config(parse(text))
    return msg


def test_unsupported_options_are_reported() -> None:
    with pytest.raises(UnsupportedModelError, match="use_depthwise"):
        build_ssd(_edited(MOBILENET_V1_FPN, ("type: 'ssd_mobilenet_v1_fpn_keras'",
                                             "type: 'ssd_mobilenet_v1_fpn_keras'\n      use_depthwise: true")))
    with pytest.raises(UnsupportedModelError, match="num_layers_before_predictor 1"):
        build_ssd(_edited(MOBILENET_V2, ("max_depth: 0", "max_depth: 64"),
                          ("num_layers_before_predictor: 0", "num_layers_before_predictor: 1")))
    with pytest.raises(ConfigError, match="use_explicit_padding"):
        build_ssd(_edited(RESNET50, ("type: 'ssd_resnet50_v1_fpn_keras'",
                                     "type: 'ssd_resnet50_v1_fpn_keras'\n      use_explicit_padding: true")))
    with pytest.raises(UnsupportedModelError, match="ssd_resnet18_v1_fpn_keras.*saved_model"):
        build_ssd(_edited(RESNET50, ("ssd_resnet50_v1_fpn_keras", "ssd_resnet18_v1_fpn_keras")))
