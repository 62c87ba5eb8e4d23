"""Checks shared by the Faster R-CNN fidelity tests: the first stage and the proposal set."""
from __future__ import annotations

import numpy as np

from tests.references import ReferenceRun, check_reference

FIRST_STAGE_KEYS = (
    "rpn_box_predictor_features_0", "rpn_features_to_crop_0", "feature_maps_0", "rpn_box_encodings",
    "rpn_objectness_predictions_with_background", "anchors", "image_shape",
)


def check_first_stage(run: ReferenceRun) -> None:
    """Every first-stage tensor within 1e-4 relative L2 of the reference."""
    for key in FIRST_STAGE_KEYS:
        check_reference(run.reference, f"predict/{key}", run.flat_prediction(key))


def check_proposal_set(run: ReferenceRun) -> np.ndarray:
    """Same number of proposals, the same set within 0.05 px; returns which of ours sit where the
    reference's proposal of the same rank does (at least 97 %)."""
    ref = run.reference
    np.testing.assert_array_equal(run.predictions["num_proposals"].numpy(), ref["predict/num_proposals"])
    num = int(ref["predict/num_proposals"][0])
    ours, theirs = run.predictions["proposal_boxes"].numpy()[0], ref["predict/proposal_boxes"][0]
    in_place = np.abs(ours - theirs).max(axis=1) < 0.05  # pixels
    assert in_place.mean() > 0.97, f"{np.flatnonzero(~in_place)}"
    distance = np.abs(ours[:num, None] - theirs[None, :num]).max(axis=2)
    assert distance.min(axis=0).max() < 0.05 and distance.min(axis=1).max() < 0.05  # same set
    return in_place


def matched_detections(run: ReferenceRun, *, missing_below: float | None = None) -> float:
    """The share of the reference's detections we make too (same class, box within 1e-3, and then the
    score within 1e-3); with ``missing_below``, every one we miss must score below it."""
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
        elif missing_below is not None:
            assert score < missing_below, f"reference detection (class {cls}, score {score}) missing"
    return found / num if num else 1.0
