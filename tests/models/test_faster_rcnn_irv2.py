"""Faster R-CNN (640, 1024) and Mask R-CNN (1024) Inception-ResNet-V2 in Keras 3 against the original.

For each model a checkpoint is synthesized from the zoo manifest (seed 0 + the fixture overrides)
and restored strictly; one forward pass on ``inputs/A.png`` is compared with ``reference.npz``,
stage by stage on the reference's own inputs to each stage (1e-4 relative L2), then end to end.
"""
from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS
from tests.models.two_stage import check_first_stage, check_proposal_set, matched_detections
from tests.references import (
    ReferenceRun,
    check_detections,
    check_reference,
    reference_image,
    rel_l2,
    write_reference_checkpoint,
    zoo_config,
)
from zoo.checkpoint import restore
from zoo.errors import UnsupportedModelError
from zoo.models.backbones.faster_rcnn.inception_resnet_v2 import keras2_layer_order
from zoo.models.faster_rcnn import FasterRCNN, build_faster_rcnn
from zoo.models.nms import NmsConfig
from zoo.models.preprocess import Resizer
from zoo.pipeline_config import model_config, parse

pytestmark = pytest.mark.slow

MASK_RCNN = "mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8"
NAMES = ("faster_rcnn_inception_resnet_v2_640x640_coco17_tpu-8", "faster_rcnn_inception_resnet_v2_1024x1024_coco17_tpu-8",
         MASK_RCNN)


def _build(name: str) -> FasterRCNN:
    return build_faster_rcnn(zoo_config(name, "faster_rcnn"))


class Run(ReferenceRun):
    """A :class:`ReferenceRun` that can also run the second stage on the reference's own proposals."""

    @functools.cached_property
    def second_stage_on_reference(self) -> dict[str, tf.Tensor]:
        """The second stage run on the reference proposals (and our first-stage features)."""
        return self.model.box_prediction(
            self.predictions["rpn_features_to_crop"][0],
            tf.constant(self.reference["predict/proposal_boxes_normalized"]), self.predictions["image_shape"],
        )

    def reference_predictions(self) -> dict[str, tf.Tensor]:
        """The reference's second-stage predictions; the large refined box encodings (stored only as a
        sample) taken from :attr:`second_stage_on_reference`."""
        out = {key: tf.constant(self.reference[f"predict/{key}"])
               for key in ("class_predictions_with_background", "proposal_boxes", "num_proposals", "image_shape")}
        out["refined_box_encodings"] = self.second_stage_on_reference["refined_box_encodings"]
        out["rpn_features_to_crop"] = self.predictions["rpn_features_to_crop"]
        return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    """One :class:`Run` per model, made on first use; only the latest is kept (each holds gigabytes)."""
    made: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in made:
            made.clear()
            gc.collect()
            folder = tmp_path_factory.mktemp(name)
            write_reference_checkpoint(name, folder)
            made[name] = Run(name, folder)
        return made[name]

    return get


@pytest.fixture(scope="module", params=NAMES, ids=("640", "1024", "mask1024"))
def run(request: pytest.FixtureRequest, runs: Callable[[str], Run]) -> Run:
    return runs(request.param)


@pytest.fixture(scope="module")
def mask_run(runs: Callable[[str], Run]) -> Run:
    return runs(MASK_RCNN)


def test_strict_restore_consumes_every_key(run: Run) -> None:
    assert run.report.ok and run.report.assigned
    assert len(run.report.matched) == run.stored_keys() - 2  # minus the object graph and save_counter
    assert len(run.model.checkpoint_map()) == len(run.report.matched) == len(run.model.keras_model.weights)
    # BatchNorm without gamma, the residual projections with a bias
    keys = run.model.checkpoint_map()
    assert not any(k.endswith("/gamma") for k in keys)
    assert keys["model/_feature_extractor_for_proposal_features/layer_with_weights-36/bias"].shape == (320,)


def test_preprocessing_maps_pixels_to_unit_range(run: Run) -> None:
    np.testing.assert_array_equal(run.true_shapes.numpy(), run.reference["true_image_shapes"])
    check_reference(run.reference, "preprocessed_inputs", run.preprocessed.numpy(), tol=1e-6)
    if "640x640" in run.name:  # padding below the 480-row image: 0 -> -1
        np.testing.assert_allclose(run.preprocessed.numpy()[0, 600, 10], [-1.0, -1.0, -1.0])


def test_first_stage_matches(run: Run) -> None:
    check_first_stage(run)


def test_proposals_match(run: Run) -> None:
    ref = run.reference
    in_place = check_proposal_set(run)
    # The native crop (use_matmul_crop_and_resize off) reads 0 for a sample point a rounding error past
    # the last feature row/column, so a proposal on the image's bottom or right edge (1.0) flips
    # between blending the last row and zero with 1e-7 of noise: those rows are compared on the
    # reference proposals only (test_second_stage_on_reference_proposals).
    on_edge = (run.reference["predict/proposal_boxes_normalized"][0] >= 1.0 - 1e-6).any(axis=1)
    rows = np.flatnonzero(in_place & ~on_edge) if not run.model.config.use_matmul_crop_and_resize else np.flatnonzero(in_place)
    for key in ("refined_box_encodings", "class_predictions_with_background"):
        got = run.predictions[key].numpy()
        if f"predict/{key}" in ref:
            check_reference({key: ref[f"predict/{key}"][rows]}, key, got[rows])
        else:  # sampled: compare the sampled elements that fall in those rows
            index, value = ref[f"predict/{key}__sample_idx"], ref[f"predict/{key}__sample_val"]
            keep = np.isin(index // (got.size // got.shape[0]), rows)
            assert keep.mean() > 0.8
            assert rel_l2(got.ravel()[index[keep]], value[keep]) < 1e-4, key


def test_second_stage_on_reference_proposals(run: Run) -> None:
    ref = run.reference
    second = run.second_stage_on_reference
    assert second["box_classifier_features"].shape[1:] == (9, 9, 1536)  # 17x17 crops, 'same' padding
    for key in ("refined_box_encodings", "class_predictions_with_background", "box_classifier_features", "proposal_boxes"):
        check_reference(ref, f"predict/{key}", second[key].numpy())


def test_postprocess_on_reference_predictions(run: Run) -> None:
    ref = run.reference
    det = {k: v.numpy() for k, v in run.model.postprocess(run.reference_predictions(),
                                                          tf.constant(ref["true_image_shapes"])).items()}
    check_detections(det, ref, score_atol=1e-6, box_atol=1e-5)


def test_end_to_end_detections_match(run: Run) -> None:
    ref, det = run.reference, run.detections
    assert matched_detections(run) >= 0.95
    np.testing.assert_allclose(det["detection_scores"][0, :5], ref["postprocess/detection_scores"][0, :5], atol=1e-3)


def test_only_mask_rcnn_has_a_third_stage(run: Run) -> None:
    assert (run.model.mask_model is not None) == (run.name == MASK_RCNN)
    assert ("detection_masks" in run.detections) == (run.name == MASK_RCNN)


def test_mask_head_is_built_from_the_config(mask_run: Run) -> None:
    run = mask_run
    layers = run.model.mask_layers
    assert [tuple(layer.kernel.shape) for layer in layers] == [(3, 3, 1536, 256)] + [(3, 3, 256, 256)] * 2 + [(3, 3, 256, 90)]
    assert run.model.class_dependent_keys()[-2:] == [
        "model/_mask_rcnn_box_predictor/_third_stage_heads/mask_predictions/_mask_predictor_layers/9/kernel",
        "model/_mask_rcnn_box_predictor/_third_stage_heads/mask_predictions/_mask_predictor_layers/9/bias",
    ]


def test_third_stage_on_reference_predictions(mask_run: Run) -> None:
    """Masks for the reference's detections (reproduced from its second-stage outputs)."""
    run = mask_run
    ref = run.reference
    third = run.model.mask_prediction(run.reference_predictions(), tf.constant(ref["true_image_shapes"]))
    np.testing.assert_array_equal(third["detection_classes"].numpy(), ref["predict/detection_classes"])
    for key in ("mask_predictions", "detection_masks"):
        check_reference(ref, f"predict/{key}", third[key].numpy())


def test_end_to_end_masks_match(mask_run: Run) -> None:
    run = mask_run
    masks = run.detections["detection_masks"]
    assert masks.shape == (1, 100, 33, 33) and 0.0 <= masks.min() and masks.max() <= 1.0
    check_reference(run.reference, "postprocess/detection_masks", masks)
    check_reference(run.reference, "predict/mask_predictions", run.predictions["mask_predictions"].numpy())


def test_mask_rcnn_graph_mode_dynamic_batch(mask_run: Run) -> None:
    """Traced once for any batch and size; each image's masks are its own detections'."""
    base = mask_run.model
    config = dataclasses.replace(base.config, first_stage_nms=NmsConfig(0.0, 0.7, 12, 12, change_coordinate_frame=False),
                                 second_stage_nms=NmsConfig(0.0, 0.6, 6, 6))
    model = FasterRCNN(config, base.feature_extractor, Resizer("fixed_shape", height=96, width=96), base.anchor_generator)
    restore(model.checkpoint_map(), mask_run.checkpoint, model_variables=model.keras_model.weights)
    fn = tf.function(model.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    image = reference_image()[:, ::4, ::4]
    pair = {k: v.numpy() for k, v in fn(tf.constant(np.concatenate([image, image[:, ::-1]]))).items()}
    alone = {k: v.numpy() for k, v in fn(tf.constant(image[:, :100])).items()}
    assert len(fn._list_all_concrete_functions()) == 1
    assert pair["detection_masks"].shape == (2, 6, 33, 33) and alone["detection_masks"].shape == (1, 6, 33, 33)
    flipped = {k: v.numpy() for k, v in fn(tf.constant(np.ascontiguousarray(image[:, ::-1]))).items()}
    np.testing.assert_allclose(pair["detection_masks"][1], flipped["detection_masks"][0], atol=1e-5)
    assert not np.allclose(pair["detection_masks"][0], pair["detection_masks"][1])


def _mask_config(edit: tuple[str, str]) -> str:
    text = (CONFIGS / MASK_RCNN / "pipeline.config").read_text()
    assert edit[0] in text
    return text.replace(*edit)


@pytest.mark.parametrize("edit, message", [
    (("predict_instance_masks: true", "predict_instance_masks: true\n convolve_then_upsample_masks: true"),
     "convolve_then_upsample_masks"),
    (("number_of_stages: 3", "number_of_stages: 2"), "number_of_stages 2 with predict_instance_masks true"),
])
def test_unsupported_mask_settings_say_what_to_do(edit: tuple[str, str], message: str) -> None:
    _, msg = model_config(parse(_mask_config(edit)))
    with pytest.raises(UnsupportedModelError, match=message):
        build_faster_rcnn(msg)


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
