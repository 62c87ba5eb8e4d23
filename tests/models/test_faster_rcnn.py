"""Faster R-CNN ResNet50 V1 640x640 in Keras 3 against the original TF2 OD API.

A checkpoint is synthesized from the zoo manifest (seed 0 + the fixture overrides) and restored
strictly; one forward pass on ``inputs/A.png`` is compared with ``reference.npz``.

Each stage is compared on the reference's own inputs to that stage, so float noise cannot cascade:
the first stage within 1e-4 relative L2; the second stage run on the reference proposals within
1e-4; ``postprocess`` run on the reference predictions gives the reference detections exactly. The
end-to-end path is checked too, with tolerances that allow for what 1e-5 of backbone noise does
downstream: a near-tie between two proposals' objectness (1 ulp apart in the reference) may swap
their order, and proposal corners move by ~0.01 px.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.models.two_stage import check_first_stage, check_proposal_set, matched_detections
from tests.references import ReferenceRun, check_detections, check_reference, reference_image, zoo_config
from zoo.checkpoint import restore
from zoo.errors import CheckpointMismatchError
from zoo.models.faster_rcnn import FasterRCNN, build_faster_rcnn
from zoo.models.nms import NmsConfig, batch_class_specific_nms, batch_multiclass_nms
from zoo.models.preprocess import Resizer

NAME = "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8"


def _build(name: str = NAME, **kw) -> FasterRCNN:
    return build_faster_rcnn(zoo_config(name, "faster_rcnn"), **kw)


@pytest.fixture(scope="module")
def checkpoint(reference_checkpoints: Callable[[str], Path]) -> Path:
    return reference_checkpoints(NAME)


@pytest.fixture(scope="module")
def run(checkpoint: Path) -> ReferenceRun:
    return ReferenceRun(NAME, checkpoint)


def test_strict_restore_consumes_every_key(run: ReferenceRun) -> None:
    assert run.report.ok and run.report.assigned
    assert len(run.report.matched) == run.stored_keys() - 2  # minus the object graph and save_counter
    assert len(run.model.checkpoint_map()) == len(run.report.matched) == len(run.model.keras_model.weights)


def test_preprocessing_matches(run: ReferenceRun) -> None:
    np.testing.assert_array_equal(run.true_shapes.numpy(), run.reference["true_image_shapes"])
    check_reference(run.reference, "preprocessed_inputs", run.preprocessed.numpy(), tol=1e-6)
    # resized first, normalized second: the zero padding below the image becomes -mean
    np.testing.assert_allclose(run.preprocessed.numpy()[0, 600, 10], [-123.68, -116.779, -103.939], rtol=1e-6)


def test_first_stage_matches(run: ReferenceRun) -> None:
    check_first_stage(run)


def test_proposals_match(run: ReferenceRun) -> None:
    ref = run.reference
    in_place = check_proposal_set(run)
    num = int(ref["predict/num_proposals"][0])
    ours, theirs = run.predictions["proposal_boxes"].numpy()[0], ref["predict/proposal_boxes"][0]
    assert not ours[num:].any() and not theirs[num:].any()  # zero padding past num_proposals
    # the rest of predict, end to end, on the proposals that sit where the reference has them
    rows = np.flatnonzero(in_place)
    for key in ("proposal_boxes_normalized", "final_anchors", "refined_box_encodings", "class_predictions_with_background"):
        got, want = run.predictions[key].numpy(), ref[f"predict/{key}"]
        got, want = (got[0, rows], want[0, rows]) if key in ("proposal_boxes_normalized", "final_anchors") else (got[rows], want[rows])
        check_reference({key: want}, key, got)


def test_second_stage_on_reference_proposals(run: ReferenceRun) -> None:
    ref = run.reference
    second = run.model.box_prediction(
        run.predictions["rpn_features_to_crop"][0], tf.constant(ref["predict/proposal_boxes_normalized"]),
        run.predictions["image_shape"],
    )
    for key in ("refined_box_encodings", "class_predictions_with_background", "box_classifier_features", "proposal_boxes"):
        check_reference(ref, f"predict/{key}", second[key].numpy())


def test_postprocess_on_reference_predictions_is_exact(run: ReferenceRun) -> None:
    ref = run.reference
    predictions = {
        key: tf.constant(ref[f"predict/{key}"])
        for key in ("refined_box_encodings", "class_predictions_with_background", "proposal_boxes", "num_proposals",
                    "image_shape")
    }
    det = {k: v.numpy() for k, v in run.model.postprocess(predictions, tf.constant(ref["true_image_shapes"])).items()}
    assert set(det) == {k.split("/", 1)[1] for k in ref if k.startswith("postprocess/")}
    check_detections(det, ref, score_atol=1e-6, box_atol=1e-6, raw_tol=1e-6)


def test_end_to_end_detections_match(run: ReferenceRun) -> None:
    ref, det = run.reference, run.detections
    assert matched_detections(run, missing_below=0.1) >= 0.98
    top = slice(0, 7)  # scores at least 7e-3 apart (and from the 8th): identical order
    np.testing.assert_array_equal(det["detection_classes"][0, top], ref["postprocess/detection_classes"][0, top])
    np.testing.assert_allclose(det["detection_scores"][0, top], ref["postprocess/detection_scores"][0, top], atol=1e-3)


def test_class_dependent_keys_and_other_class_counts(checkpoint: Path) -> None:
    other = _build(num_classes=20)
    assert other.class_head.kernel.shape == (2048, 21)
    keys = other.class_dependent_keys()
    assert keys == [
        "model/_mask_rcnn_box_predictor/_class_prediction_head/_class_predictor_layers/1/kernel",
        "model/_mask_rcnn_box_predictor/_class_prediction_head/_class_predictor_layers/1/bias",
    ]  # boxes are shared across classes in this config
    before = other.class_head.kernel.numpy().copy()
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        restore(other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights)
    np.testing.assert_array_equal(before, other.class_head.kernel.numpy())
    report = restore(other.checkpoint_map(), checkpoint, model_variables=other.keras_model.weights,
                     skip={k: "class count differs" for k in keys})
    assert report.ok and len(report.skipped) == 2


def test_graph_mode_dynamic_batch_and_size(checkpoint: Path) -> None:
    """Traced once for any batch and image size (as the keras backend runs it); images stay independent."""
    base = _build()
    config = dataclasses.replace(
        base.config,
        first_stage_nms=NmsConfig(0.0, 0.7, 16, 16, change_coordinate_frame=False),
        second_stage_nms=NmsConfig(0.0, 0.6, 10, 10),
    )
    model = FasterRCNN(config, base.feature_extractor, Resizer("keep_aspect_ratio", 96, 128), base.anchor_generator)
    restore(model.checkpoint_map(), checkpoint, model_variables=model.keras_model.weights)
    fn = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    image = reference_image()[:, ::4, ::4]
    batch = np.concatenate([image, np.ascontiguousarray(image[:, :, ::-1])], axis=0)
    out = {k: v.numpy() for k, v in fn(tf.constant(batch)).items()}
    single = {k: v.numpy() for k, v in fn(tf.constant(image[:, :100])).items()}  # another size, batch of one
    alone = {k: v.numpy() for k, v in fn(tf.constant(image)).items()}
    assert len(fn._list_all_concrete_functions()) == 1
    assert out["detection_boxes"].shape == (2, 10, 4) and single["detection_boxes"].shape == (1, 10, 4)
    assert out["raw_detection_scores"].shape == (2, 16, 91)
    np.testing.assert_allclose(out["detection_boxes"][0], alone["detection_boxes"][0], atol=1e-5)
    np.testing.assert_array_equal(out["detection_classes"][0], alone["detection_classes"][0])
    assert not np.allclose(out["detection_scores"][1], out["detection_scores"][0])
    predictions = model.keras_model(model.preprocess(tf.constant(image))[0])  # keras_model runs predict
    assert predictions["class_predictions_with_background"].shape == (16, 91)


def _random_detections(seed: int, batch: int = 2, num: int = 40, classes: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 100, (batch, num, classes, 2))
    sizes = rng.uniform(5, 40, (batch, num, classes, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=-1).astype(np.float32)
    scores = rng.uniform(0, 1, (batch, num, classes)).astype(np.float32)
    return boxes, scores


def test_class_specific_nms_agrees_with_per_class_shared_box_nms() -> None:
    """Boxes per class (share_box_across_classes: false): every class is suppressed among its own
    boxes, survivors of all classes merged by score, clipped and cut to max_total_size."""
    boxes, scores = _random_detections(0)
    batch, num, classes = scores.shape
    config = NmsConfig(0.2, 0.5, 6, 15)
    window = tf.constant([[0.0, 0.0, 80.0, 100.0], [10.0, 0.0, 100.0, 90.0]])
    index = np.tile(np.arange(num, dtype=np.float32)[None], [batch, 1])
    extra = {"anchor_indices": tf.constant(index), "multiclass_scores": tf.constant(scores)}
    got = batch_class_specific_nms(tf.constant(boxes), tf.constant(scores), config, window, extra)
    # same boxes for every class: exactly the shared-box NMS
    tiled = np.repeat(boxes[:, :, :1], classes, axis=2)
    same = batch_class_specific_nms(tf.constant(tiled), tf.constant(scores), config, window, extra)
    shared = batch_multiclass_nms(tiled[:, :, :1], scores, config, clip_window=window, additional_fields=extra)
    for a, b in zip((*same[:3], same[4]), (*shared[:3], shared[4])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    np.testing.assert_array_equal(same[3]["anchor_indices"].numpy(), shared[3]["anchor_indices"].numpy())
    # own boxes per class: the union of one-class NMS runs, best first
    for b in range(batch):
        expected = []
        for c in range(classes):
            one = batch_multiclass_nms(boxes[b:b + 1, :, c:c + 1], scores[b:b + 1, :, c:c + 1], config,
                                       clip_window=window[b:b + 1], additional_fields={"i": index[b:b + 1]})
            n = int(one[4][0])
            expected += [(float(s), c, int(i), tuple(bx)) for s, i, bx in
                         zip(one[1][0, :n].numpy(), one[3]["i"][0, :n].numpy(), one[0][0, :n].numpy())]
        expected = sorted(expected, key=lambda e: -e[0])[: config.max_total_size]
        n = int(got[4][b])
        assert n == len(expected)
        np.testing.assert_allclose(got[1][b, :n].numpy(), [e[0] for e in expected], atol=1e-6)
        np.testing.assert_array_equal(got[2][b, :n].numpy(), [e[1] for e in expected])
        np.testing.assert_array_equal(got[3]["anchor_indices"][b, :n].numpy(), [e[2] for e in expected])
        np.testing.assert_allclose(got[0][b, :n].numpy(), [e[3] for e in expected], atol=1e-6)
        assert not got[1][b, n:].numpy().any()
