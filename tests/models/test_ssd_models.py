"""SSD and EfficientDet in Keras 3 against the original TF2 OD API.

For each model of :data:`MODELS` a checkpoint is synthesized from the zoo manifest (seed 0 + the
fixture overrides), restored strictly (every checkpoint key consumed, every model variable
assigned), and one forward pass on ``inputs/A.png`` is compared with ``reference.npz``: predict
tensors within 1e-4 relative L2, detections with the same classes and anchors, boxes and scores to
float rounding. The FPN-lite model is also run on the checkpoint inside the stand-in zoo tarball and
compared with the outputs of the SavedModel exported from the same weights. The 101/152-layer and
1024x1024 ResNet variants run the same code (their layouts are checked against the manifests).
"""
from __future__ import annotations

import dataclasses
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS, FIXTURES, MANIFESTS
from tests.references import (
    ReferenceRun,
    check_detections,
    check_reference,
    load_reference,
    reference_image,
    rel_l2,
    zoo_config,
)
from zoo.checkpoint import restore
from zoo.errors import CheckpointMismatchError, ConfigError, UnsupportedModelError
from zoo.models.layers import FusedBatchNormalization, with_fused_batch_norm
from zoo.models.ssd import SSD, build_ssd
from zoo.pipeline_config import model_config, parse

FPNLITE = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
EFFICIENTDET = "efficientdet_d0_coco17_tpu-32"
RESNET50 = "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8"
MOBILENET_V1_FPN = "ssd_mobilenet_v1_fpn_640x640_coco17_tpu-8"
MOBILENET_V2 = "ssd_mobilenet_v2_320x320_coco17_tpu-8"
PREDICT_KEYS = ("box_encodings", "class_predictions_with_background", "anchors")


@dataclasses.dataclass(frozen=True)
class Case:
    """One reference model and what differs in checking it."""

    name: str
    class_head_levels: int = 1  # per-level class heads (convolutional predictor) vs one weight-shared head
    feature_map_tols: tuple[tuple[str, float], ...] = ()  # looser bounds for ill-conditioned maps
    detection_graph_holds_every_variable: bool = True  # EfficientDet's classification top is checkpointed only


MODELS = (
    Case(FPNLITE),
    Case(EFFICIENTDET, detection_graph_holds_every_variable=False),
    Case(RESNET50),
    Case(MOBILENET_V1_FPN),
    # SSD MobileNet V2's last map is 1x1: its BatchNorm statistics were calibrated on a single value per
    # channel, so it normalizes by ~sqrt(epsilon) after a near-total cancellation. Float32 rounding alone
    # moves it 1.4e-1 (relative L2) from a float64 evaluation of the same network, in the original as
    # here; the two float32 implementations agree to 4.3e-3.
    Case(MOBILENET_V2, class_head_levels=6, feature_map_tols=(("predict/feature_maps_5", 1e-2),)),
)


def _build(name: str, **kw) -> SSD:
    return build_ssd(zoo_config(name, "ssd"), **kw)


@pytest.fixture(scope="module", params=MODELS, ids=[case.name for case in MODELS])
def run(request: pytest.FixtureRequest, reference_checkpoints: Callable[[str], Path]) -> ReferenceRun:
    run = ReferenceRun(request.param.name, reference_checkpoints(request.param.name))
    run.case = request.param
    return run


def test_strict_restore_consumes_every_key(run: ReferenceRun) -> None:
    assert run.report.ok and run.report.assigned
    assert run.report.missing == [] and run.report.unexpected == []
    assert len(run.report.matched) == run.stored_keys() - 2  # minus the object graph and save_counter
    assert len(run.model.checkpoint_map()) == len(run.report.matched)
    if run.case.detection_graph_holds_every_variable:
        assert len(run.model.keras_model.weights) == len(run.report.matched)


def test_preprocessing_matches(run: ReferenceRun) -> None:
    np.testing.assert_array_equal(run.true_shapes.numpy(), run.reference["true_image_shapes"])
    if "preprocessed_inputs" in run.reference:  # kept in full
        np.testing.assert_allclose(run.preprocessed.numpy(), run.reference["preprocessed_inputs"], atol=1e-5)
    else:
        check_reference(run.reference, "preprocessed_inputs", run.preprocessed.numpy(), tol=1e-6)


def test_predictions_match(run: ReferenceRun) -> None:
    for key in PREDICT_KEYS:
        check_reference(run.reference, f"predict/{key}", np.asarray(run.predictions[key]))
    maps = run.predictions["feature_maps"]
    meta = json.loads((FIXTURES / run.name / "meta.json").read_text())
    assert len(maps) == sum(1 for k in meta["predict_keys"] if k.startswith("feature_maps_"))
    tols = dict(run.case.feature_map_tols)
    for i, feature in enumerate(maps):
        key = f"predict/feature_maps_{i}"
        check_reference(run.reference, key, feature.numpy(), tol=tols.get(key, 1e-4))


def test_detections_match(run: ReferenceRun) -> None:
    check_detections(run.detections, run.reference, score_atol=2e-4, box_atol=1e-4, raw_tol=1e-4)


def test_class_heads_depend_on_num_classes(run: ReferenceRun) -> None:
    keys = run.model.class_dependent_keys()
    assert len(keys) == 2 * run.case.class_head_levels
    assert all("_class_predictor_layers/0/" in k for k in keys) and any(k.endswith("/bias") for k in keys)


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


def test_fpnlite_agrees_with_the_exported_savedmodel(tmp_path: Path) -> None:
    """Keras model on the tarball's checkpoint == the archive's SavedModel serving outputs."""
    archive = FIXTURES / "tarballs" / f"{FPNLITE}.tar.gz"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/checkpoint/" in m.name and m.isfile()]
        tar.extractall(tmp_path, members=members, filter="data")
    model = _build(FPNLITE)
    restore(model.checkpoint_map(), tmp_path / FPNLITE / "checkpoint", model_variables=model.keras_model.weights)
    det = {k: v.numpy() for k, v in model(tf.constant(reference_image())).items()}
    served = dict(np.load(FIXTURES / "tarballs" / f"{FPNLITE}.serving_outputs.npz"))
    # the exporter's classes are 1-based
    check_detections(det, served, score_atol=2e-4, box_atol=1e-4, class_offset=1)
    assert rel_l2(det["raw_detection_scores"], served["raw_detection_scores"]) < 1e-4


def test_strict_restore_refuses_a_checkpoint_with_other_classes(reference_checkpoints) -> None:
    checkpoint = reference_checkpoints(FPNLITE)
    other = _build(FPNLITE, num_classes=20)
    assert other.class_head.weights[-1].shape == (6 * 21,)
    before = [np.asarray(v).copy() for v in other.keras_model.weights[:3]]
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        restore(other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights)
    for b, v in zip(before, other.keras_model.weights[:3]):
        np.testing.assert_array_equal(b, np.asarray(v))
    report = restore(
        other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights,
        skip={k: "class count differs" for k in other.class_dependent_keys()},
    )
    assert report.ok and len(report.skipped) == 2  # pointwise kernel and bias of the class predictor


def test_graph_mode_batch_of_two(reference_checkpoints) -> None:
    """Traced once for any batch and image size, as the keras backend runs it; images stay independent."""
    model = _build(FPNLITE)
    restore(model.checkpoint_map(), reference_checkpoints(FPNLITE), model_variables=model.keras_model.weights)
    fn = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    image = reference_image()
    small = image[:, ::2, ::2]
    batch = np.concatenate([image, np.ascontiguousarray(image[:, :, ::-1])], axis=0)
    out = {k: v.numpy() for k, v in fn(tf.constant(batch)).items()}
    assert out["detection_boxes"].shape == (2, 100, 4) and out["num_detections"].shape == (2,)
    check_detections(out, load_reference(FPNLITE), score_atol=2e-4, box_atol=1e-4)
    assert not np.array_equal(out["detection_anchor_indices"][1], out["detection_anchor_indices"][0])
    assert fn(tf.constant(small))["detection_boxes"].shape == (1, 100, 4)
    assert len(fn._list_all_concrete_functions()) == 1


def test_convolutional_predictor_refuses_other_classes_then_skips_them(reference_checkpoints) -> None:
    checkpoint = reference_checkpoints(MOBILENET_V2)
    other = _build(MOBILENET_V2, num_classes=20)
    assert [int(h.weights[-1].shape[0]) for h in other.box_predictor.class_heads] == [3 * 21] + [6 * 21] * 5
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        restore(other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights)
    report = restore(
        other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights,
        skip={k: "class count differs" for k in other.class_dependent_keys()},
    )
    assert report.ok and len(report.skipped) == 12


def test_mobilenet_v2_graph_mode_any_size_and_batch(reference_checkpoints) -> None:
    """Traced once for any batch and image size; odd intermediate sizes (300 -> 75 -> 38) stay 'same'."""
    model = _build(MOBILENET_V2)
    restore(model.checkpoint_map(), reference_checkpoints(MOBILENET_V2), model_variables=model.keras_model.weights)
    fn = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    image = reference_image()
    batch = np.concatenate([image, np.ascontiguousarray(image[:, ::-1])], axis=0)
    out = {k: v.numpy() for k, v in fn(tf.constant(batch)).items()}
    check_detections(out, load_reference(MOBILENET_V2), score_atol=2e-4, box_atol=1e-4)
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
