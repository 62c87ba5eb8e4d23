"""Faster R-CNN Inception-ResNet-V2 (640 and 1024) in Keras 3 against the original TF2 OD API.

For each model a checkpoint is synthesized from the zoo manifest (seed 0 + the fixture overrides)
and restored strictly; one forward pass on ``inputs/A.png`` is compared with ``reference.npz``,
stage by stage on the reference's own inputs to each stage (1e-4 relative L2; postprocess exact),
then end to end.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import CONFIGS, FIXTURES, INPUT_IMAGE, MANIFESTS, TOOLS
from PIL import Image

from zoo.checkpoint import restore
from zoo.models.backbones.faster_rcnn_inception_resnet_v2 import keras2_layer_order
from zoo.models.faster_rcnn import FasterRCNN, build_faster_rcnn
from zoo.pipeline_config import load, model_config

NAMES = ("faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8", "faster_rcnn_inception_resnet_v2_1024x1024_coco17_tpu-8")
FIRST_STAGE_KEYS = (
    "rpn_box_predictor_features_0", "rpn_features_to_crop_0", "feature_maps_0", "rpn_box_encodings",
    "rpn_objectness_predictions_with_background", "anchors", "image_shape",
)


def _build(name: str) -> FasterRCNN:
    arch, msg = model_config(load(CONFIGS / name / "pipeline.config"))
    assert arch == "faster_rcnn"
    return build_faster_rcnn(msg)


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-12))


def _check(ref: dict[str, np.ndarray], key: str, got: np.ndarray, tol: float = 1e-4) -> None:
    got = np.asarray(got)
    if key in ref:
        assert got.shape == ref[key].shape, key
        assert _rel(got, ref[key]) < tol, f"{key}: relative L2 {_rel(got, ref[key]):.2e}"
        return
    assert tuple(ref[f"{key}__shape"]) == got.shape, key  # stored as a sample plus exact sums
    sample = got.ravel()[ref[f"{key}__sample_idx"]]
    assert _rel(sample, ref[f"{key}__sample_val"]) < tol, f"{key}: sample relative L2 {_rel(sample, ref[f'{key}__sample_val']):.2e}"
    norm = np.sqrt(float(ref[f"{key}__sumsq"]))
    assert abs(np.linalg.norm(got.astype(np.float64)) - norm) <= tol * norm, key
    assert abs(got.astype(np.float64).sum() - float(ref[f"{key}__sum"])) <= tol * np.sqrt(got.size) * norm, key


class Run:
    """One model: checkpoint, strict restore report, one forward pass, the reference."""

    def __init__(self, name: str, checkpoint: Path) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.model = _build(name)
        self.report = restore(self.model.checkpoint_map(), checkpoint, model_variables=self.model.keras_model.weights)
        image = np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))[np.newaxis]
        self.preprocessed, self.true_shapes = self.model.preprocess(tf.constant(image))
        self.predictions = self.model.predict(self.preprocessed, self.true_shapes)
        self.detections = {k: v.numpy() for k, v in self.model.postprocess(self.predictions, self.true_shapes).items()}
        ref = np.load(FIXTURES / name / "reference.npz")
        self.reference = {k: ref[k] for k in ref.files}

    def flat_prediction(self, key: str) -> np.ndarray:
        name, _, index = key.rpartition("_")
        if name in self.predictions and isinstance(self.predictions[name], list):
            return self.predictions[name][int(index)].numpy()
        return np.asarray(self.predictions[key])


@pytest.fixture(scope="module", params=NAMES, ids=("640", "1024"))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    subprocess.run(
        [sys.executable, str(TOOLS / "synth_checkpoint.py"), str(MANIFESTS / f"{name}.json"), str(folder),
         "--seed", "0", "--overrides", str(FIXTURES / name / "overrides.npz")],
        check=True, capture_output=True,
    )
    return Run(name, folder)


def test_strict_restore_consumes_every_key(run: Run) -> None:
    assert run.report.ok and run.report.assigned
    stored = tf.train.load_checkpoint(str(run.checkpoint / "ckpt-0")).get_variable_to_shape_map()
    assert len(run.report.matched) == len(stored) - 2  # minus the object graph and save_counter
    assert len(run.model.checkpoint_map()) == len(run.report.matched) == len(run.model.keras_model.weights)
    # BatchNorm without gamma, the residual projections with a bias
    keys = run.model.checkpoint_map()
    assert not any(k.endswith("/gamma") for k in keys)
    assert keys["model/_feature_extractor_for_proposal_features/layer_with_weights-36/bias"].shape == (320,)


def test_preprocessing_maps_pixels_to_unit_range(run: Run) -> None:
    np.testing.assert_array_equal(run.true_shapes.numpy(), run.reference["true_image_shapes"])
    _check(run.reference, "preprocessed_inputs", run.preprocessed.numpy(), tol=1e-6)
    if "640x640" in run.name:  # padding below the 480-row image: 0 -> -1
        np.testing.assert_allclose(run.preprocessed.numpy()[0, 600, 10], [-1.0, -1.0, -1.0])


def test_first_stage_matches(run: Run) -> None:
    for key in FIRST_STAGE_KEYS:
        _check(run.reference, f"predict/{key}", run.flat_prediction(key))


def test_proposals_match(run: Run) -> None:
    ref = run.reference
    np.testing.assert_array_equal(run.predictions["num_proposals"].numpy(), ref["predict/num_proposals"])
    num = int(ref["predict/num_proposals"][0])
    ours, theirs = run.predictions["proposal_boxes"].numpy()[0], ref["predict/proposal_boxes"][0]
    in_place = np.abs(ours - theirs).max(axis=1) < 0.05  # pixels
    assert in_place.mean() > 0.97, f"{np.flatnonzero(~in_place)}"
    distance = np.abs(ours[:num, None] - theirs[None, :num]).max(axis=2)
    assert distance.min(axis=0).max() < 0.05 and distance.min(axis=1).max() < 0.05  # same set
    rows = np.flatnonzero(in_place)
    for key in ("refined_box_encodings", "class_predictions_with_background"):
        _check({key: ref[f"predict/{key}"][rows]}, key, run.predictions[key].numpy()[rows])


def test_second_stage_on_reference_proposals(run: Run) -> None:
    ref = run.reference
    second = run.model.box_prediction(
        run.predictions["rpn_features_to_crop"][0], tf.constant(ref["predict/proposal_boxes_normalized"]),
        run.predictions["image_shape"],
    )
    assert second["box_classifier_features"].shape[1:] == (9, 9, 1536)  # 17x17 crops, 'same' padding
    for key in ("refined_box_encodings", "class_predictions_with_background", "box_classifier_features", "proposal_boxes"):
        _check(ref, f"predict/{key}", second[key].numpy())


def test_postprocess_on_reference_predictions_is_exact(run: Run) -> None:
    ref = run.reference
    predictions = {
        key: tf.constant(ref[f"predict/{key}"])
        for key in ("refined_box_encodings", "class_predictions_with_background", "proposal_boxes", "num_proposals",
                    "image_shape")
    }
    det = {k: v.numpy() for k, v in run.model.postprocess(predictions, tf.constant(ref["true_image_shapes"])).items()}
    np.testing.assert_array_equal(det["num_detections"], ref["postprocess/num_detections"])
    np.testing.assert_array_equal(det["detection_classes"], ref["postprocess/detection_classes"])
    np.testing.assert_array_equal(det["detection_anchor_indices"], ref["postprocess/detection_anchor_indices"])
    np.testing.assert_allclose(det["detection_scores"], ref["postprocess/detection_scores"], atol=1e-6)
    np.testing.assert_allclose(det["detection_boxes"], ref["postprocess/detection_boxes"], atol=1e-6)


def test_end_to_end_detections_match(run: Run) -> None:
    ref, det = run.reference, run.detections
    np.testing.assert_array_equal(det["num_detections"], ref["postprocess/num_detections"])
    num = int(ref["postprocess/num_detections"][0])
    found = 0
    for box, score, cls in zip(ref["postprocess/detection_boxes"][0, :num], ref["postprocess/detection_scores"][0, :num],
                               ref["postprocess/detection_classes"][0, :num]):
        same = (det["detection_classes"][0, :num] == cls) & (np.abs(det["detection_boxes"][0, :num] - box).max(axis=1) < 1e-3)
        if same.any():
            assert np.abs(det["detection_scores"][0, :num][same] - score).min() < 1e-3
            found += 1
    assert found >= 0.95 * num
    np.testing.assert_allclose(det["detection_scores"][0, :5], ref["postprocess/detection_scores"][0, :5], atol=1e-3)


def _order(swap: bool) -> list[str]:
    inputs = keras.Input((4,))
    short = keras.layers.Dense(2, name="a")(inputs)
    long = keras.layers.Dense(2, name="c")(keras.layers.Dense(3, name="b")(inputs))
    joined = keras.layers.Concatenate(name="join")([long, short] if swap else [short, long])
    model = keras.Model(inputs, keras.layers.Dense(1, name="d")(joined))
    return [layer.name for layer in keras2_layer_order(model)]


def test_keras2_layer_order_is_depth_then_first_visit() -> None:
    """Deeper layers first; at equal depth, the one a walk from the output reaches first."""
    assert _order(swap=False) == ["b", "a", "c", "join", "d"]
    assert _order(swap=True) == ["b", "c", "a", "join", "d"]
