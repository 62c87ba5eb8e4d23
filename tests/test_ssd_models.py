"""SSD MobileNetV2 FPN-lite and EfficientDet-D0 in Keras 3 against the original TF2 OD API.

For each model: a checkpoint is synthesized from the zoo manifest (seed 0 + the fixture overrides),
restored strictly (every checkpoint key consumed, every model variable assigned), and one forward
pass on ``inputs/A.png`` is compared with ``reference.npz`` (predict tensors within 1e-4 relative L2;
detections: same classes and anchors, boxes and scores to float rounding). The FPN-lite model is
also run on the checkpoint inside the stand-in zoo tarball and compared with the outputs of the
SavedModel exported from the same weights.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import CONFIGS, FIXTURES, INPUT_IMAGE
from PIL import Image

from zoo.checkpoint import restore
from zoo.errors import CheckpointMismatchError
from zoo.models.ssd import SSD, build_ssd
from zoo.pipeline_config import load, model_config

from .references import check_reference, rel_l2, write_reference_checkpoint

FPNLITE = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
EFFICIENTDET = "efficientdet_d0_coco17_tpu-32"
PREDICT_KEYS = ("box_encodings", "class_predictions_with_background", "anchors")


def _build(name: str, **kw) -> SSD:
    arch, msg = model_config(load(CONFIGS / name / "pipeline.config"))
    assert arch == "ssd"
    return build_ssd(msg, **kw)


def _synth_checkpoint(name: str, folder: Path) -> Path:
    write_reference_checkpoint(name, folder)
    return folder


def _image() -> np.ndarray:
    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))[np.newaxis]


class Run:
    """One model, its checkpoint, and one forward pass."""

    def __init__(self, name: str, checkpoint: Path) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.model = _build(name)
        self.report = restore(self.model.checkpoint_map(), checkpoint, model_variables=self.model.keras_model.weights)
        self.preprocessed, self.true_shapes = self.model.preprocess(tf.constant(_image()))
        self.predictions = self.model.predict(self.preprocessed)
        self.detections = self.model.postprocess(self.predictions, self.true_shapes)
        ref = np.load(FIXTURES / name / "reference.npz")
        self.reference = {k: ref[k] for k in ref.files}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory):
    """name -> synthesized checkpoint folder, written once per module."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = _synth_checkpoint(name, tmp_path_factory.mktemp(name))
        return made[name]

    return get


@pytest.fixture(scope="module", params=[FPNLITE, EFFICIENTDET])
def run(request: pytest.FixtureRequest, checkpoints) -> Run:
    return Run(request.param, checkpoints(request.param))


def test_strict_restore_consumes_every_key(run: Run) -> None:
    assert run.report.ok and run.report.assigned
    assert run.report.missing == [] and run.report.unexpected == []
    manifest_keys = sum(1 for _ in tf.train.load_checkpoint(str(run.checkpoint / "ckpt-0")).get_variable_to_shape_map())
    assert len(run.report.matched) == manifest_keys - 2  # minus the object graph and save_counter
    assert len(run.model.checkpoint_map()) == len(run.report.matched)


def test_preprocessing_matches(run: Run) -> None:
    np.testing.assert_array_equal(run.true_shapes.numpy(), run.reference["true_image_shapes"])
    np.testing.assert_allclose(run.preprocessed.numpy(), run.reference["preprocessed_inputs"], atol=1e-5)


def test_predictions_match(run: Run) -> None:
    for key in PREDICT_KEYS:
        check_reference(run.reference, f"predict/{key}", np.asarray(run.predictions[key]))
    for i, feature in enumerate(run.predictions["feature_maps"]):
        check_reference(run.reference, f"predict/feature_maps_{i}", feature.numpy())


def test_detections_match(run: Run) -> None:
    ref, det = run.reference, {k: v.numpy() for k, v in run.detections.items()}
    np.testing.assert_array_equal(det["num_detections"], ref["postprocess/num_detections"])
    np.testing.assert_array_equal(det["detection_classes"], ref["postprocess/detection_classes"])
    np.testing.assert_array_equal(det["detection_anchor_indices"], ref["postprocess/detection_anchor_indices"])
    np.testing.assert_allclose(det["detection_scores"], ref["postprocess/detection_scores"], atol=2e-4)
    np.testing.assert_allclose(det["detection_boxes"], ref["postprocess/detection_boxes"], atol=1e-4)
    for key in ("raw_detection_boxes", "raw_detection_scores", "detection_multiclass_scores"):
        check_reference(ref, f"postprocess/{key}", det[key])


def test_class_head_depends_on_num_classes(run: Run) -> None:
    keys = run.model.class_dependent_keys()
    assert keys and all("_class_predictor_layers" in k for k in keys)
    assert any(k.endswith("/bias") for k in keys)


def test_fpnlite_agrees_with_the_exported_savedmodel(tmp_path: Path) -> None:
    """Keras model on the tarball's checkpoint == the archive's SavedModel serving outputs."""
    archive = FIXTURES / "tarballs" / f"{FPNLITE}.tar.gz"
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/checkpoint/" in m.name and m.isfile()]
        tar.extractall(tmp_path, members=members, filter="data")
    model = _build(FPNLITE)
    restore(model.checkpoint_map(), tmp_path / FPNLITE / "checkpoint", model_variables=model.keras_model.weights)
    det = {k: v.numpy() for k, v in model(tf.constant(_image())).items()}
    served = np.load(FIXTURES / "tarballs" / f"{FPNLITE}.serving_outputs.npz")
    np.testing.assert_array_equal(det["detection_classes"] + 1, served["detection_classes"])  # exporter's label offset
    np.testing.assert_array_equal(det["detection_anchor_indices"], served["detection_anchor_indices"].astype(np.int32))
    np.testing.assert_allclose(det["detection_scores"], served["detection_scores"], atol=2e-4)
    np.testing.assert_allclose(det["detection_boxes"], served["detection_boxes"], atol=1e-4)
    assert rel_l2(det["raw_detection_scores"], served["raw_detection_scores"]) < 1e-4


def test_strict_restore_refuses_a_checkpoint_with_other_classes(checkpoints) -> None:
    checkpoint = checkpoints(FPNLITE)
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


def test_graph_mode_batch_of_two(checkpoints) -> None:
    """Traced once for any batch and image size, as the keras backend runs it; images stay independent."""
    model = _build(FPNLITE)
    restore(model.checkpoint_map(), checkpoints(FPNLITE), model_variables=model.keras_model.weights)
    fn = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    image = _image()
    small = image[:, ::2, ::2]
    batch = np.concatenate([image, np.ascontiguousarray(image[:, :, ::-1])], axis=0)
    out = {k: v.numpy() for k, v in fn(tf.constant(batch)).items()}
    assert out["detection_boxes"].shape == (2, 100, 4) and out["num_detections"].shape == (2,)
    ref = np.load(FIXTURES / FPNLITE / "reference.npz")
    np.testing.assert_array_equal(out["detection_anchor_indices"][0], ref["postprocess/detection_anchor_indices"][0])
    np.testing.assert_allclose(out["detection_boxes"][0], ref["postprocess/detection_boxes"][0], atol=1e-4)
    assert not np.array_equal(out["detection_anchor_indices"][1], out["detection_anchor_indices"][0])
    assert fn(tf.constant(small))["detection_boxes"].shape == (1, 100, 4)
    assert len(fn._list_all_concrete_functions()) == 1
