"""Faster R-CNN / Mask R-CNN training: anchor and proposal targets and the balanced sampler on
hand-made boxes, the loss settings of a config, and a few training steps of small two-stage models
(a tiny stride-16 feature extractor) through ``zoo.finetune`` and ``odzoo finetune``: losses fall,
``trainable="heads"`` moves only the heads, a new class count restores what fits, the export loads
back with the same detections."""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS
from zoo.models.box_coders import FasterRcnnBoxCoder
from zoo.pipeline_config import load, model_config, parse
from zoo.train.faster_rcnn.losses import (
    FasterRcnnLossConfig,
    box_classifier_losses,
    mask_loss,
    rpn_losses,
)
from zoo.train.faster_rcnn.sampling import balanced_sample
from zoo.train.faster_rcnn.targets import (
    DETECTION_MATCHER,
    IGNORED,
    RPN_MATCHER,
    UNMATCHED,
    assign_targets,
)

CODER = FasterRcnnBoxCoder((10.0, 10.0, 5.0, 5.0))
TINY_TYPE = "tiny_two_stage_test_extractor"


# ------------------------------------------------------------------------------------------ targets
# four 0.5 x 0.5 anchors tiling the unit square, one thin anchor on the left edge
ANCHORS = np.array([[0, 0, .5, .5], [0, .5, .5, 1], [.5, 0, 1, .5], [.5, .5, 1, 1], [0, 0, 1, .1]], np.float32)
# box 0 covers 80% of anchor 0; box 1 covers 45% of anchor 3 (0.3 <= IoU < 0.7: ignored band);
# box 2 is padding
BOXES = np.array([[[0, 0, .5, .4], [.5, .5, 1, .725], [0, 0, 0, 0]]], np.float32)
CLASSES = np.array([[2, 0, 0]], np.int32)
WEIGHTS = np.array([[1, 1, 0]], np.float32)


def test_rpn_targets_thresholds_ignored_band_and_forced_matches():
    plain = dataclass_replace_force(False)
    t = assign_targets(ANCHORS, BOXES, np.zeros_like(CLASSES), WEIGHTS, matcher=plain, box_coder=CODER, num_classes=1)
    # anchor 0: IoU 0.8 -> box 0; anchor 3: IoU 0.45 with box 1 -> ignored; anchor 4: IoU 0.05 / 0.25 = 0.2
    # with box 0 -> negative
    np.testing.assert_array_equal(t["matches"].numpy()[0], [0, UNMATCHED, UNMATCHED, IGNORED, UNMATCHED])
    np.testing.assert_array_equal(t["cls_weights"].numpy()[0], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(t["cls_targets"].numpy()[0], [[0, 1], [1, 0], [1, 0], [1, 0], [1, 0]])
    expected = [0.0, (0.2 - 0.25) / 0.5 * 10, 0.0, math.log(0.4 / 0.5) * 5]
    np.testing.assert_allclose(t["reg_targets"].numpy()[0, 0], expected, atol=1e-4)
    np.testing.assert_array_equal(t["reg_weights"].numpy()[0], [1, 0, 0, 0, 0])
    # the original's RPN matcher forces every box onto its best anchor: box 1 takes anchor 3
    forced = assign_targets(ANCHORS, BOXES, np.zeros_like(CLASSES), WEIGHTS, matcher=RPN_MATCHER, box_coder=CODER,
                            num_classes=1)
    np.testing.assert_array_equal(forced["matches"].numpy()[0], [0, UNMATCHED, UNMATCHED, 1, UNMATCHED])
    np.testing.assert_array_equal(forced["reg_weights"].numpy()[0], [1, 0, 0, 1, 0])
    assert (RPN_MATCHER.matched_threshold, RPN_MATCHER.unmatched_threshold) == (0.7, 0.3)


def test_anchors_outside_the_input_take_no_part_in_matching():
    from zoo.train.faster_rcnn.targets import inside_image

    pixels = ANCHORS * 64.0
    pixels[4] = [-8, 0, 40, 6.4]  # crosses the top border
    np.testing.assert_array_equal(inside_image(pixels, 64, 64).numpy(), [True, True, True, True, False])
    thin = np.array([[[0, 0, 1, .12]]], np.float32)  # best anchor: 4 (IoU 0.83)
    ones = np.ones((1, 1), np.float32)
    every = assign_targets(ANCHORS, thin, np.zeros((1, 1), np.int32), ones, matcher=RPN_MATCHER, box_coder=CODER,
                           num_classes=1)
    np.testing.assert_array_equal(every["matches"].numpy()[0], [UNMATCHED] * 4 + [0])
    valid = np.array([[True, True, True, True, False]])
    kept = assign_targets(ANCHORS, thin, np.zeros((1, 1), np.int32), ones, matcher=RPN_MATCHER, box_coder=CODER,
                          num_classes=1, valid=valid)
    # forced onto the best anchor left (0 and 2 tie at IoU 0.19: the first); anchor 4 has no weight
    np.testing.assert_array_equal(kept["matches"].numpy()[0], [0, UNMATCHED, UNMATCHED, UNMATCHED, UNMATCHED])
    np.testing.assert_array_equal(kept["cls_weights"].numpy()[0], [1, 1, 1, 1, 0])


def dataclass_replace_force(force: bool):
    import dataclasses

    return dataclasses.replace(RPN_MATCHER, force_match_for_each_row=force)


def test_second_stage_targets_per_image_proposals_and_padding():
    # per-image proposals; the last one is padding (invalid) although it sits exactly on box 0
    proposals = np.array([[[0, 0, .5, .45], [.5, .5, 1, .725], [0, 0, .5, .1], [0, 0, .5, .4]]], np.float32)
    valid = np.array([[True, True, True, False]])
    t = assign_targets(proposals, BOXES, CLASSES, WEIGHTS, matcher=DETECTION_MATCHER, box_coder=CODER,
                       num_classes=3, valid=valid)
    # IoU 0.2/0.225 = 0.889 -> box 0 (class 2 -> slot 3); exactly box 1 -> class 0 (slot 1); 0.25 -> background
    np.testing.assert_array_equal(t["matches"].numpy()[0], [0, 1, UNMATCHED, UNMATCHED])
    np.testing.assert_array_equal(np.argmax(t["cls_targets"].numpy()[0], -1), [3, 1, 0, 0])
    np.testing.assert_array_equal(t["cls_weights"].numpy()[0], [1, 1, 1, 0])  # no ignored band; padding out
    np.testing.assert_allclose(t["reg_targets"].numpy()[0, 1], [0, 0, 0, 0], atol=1e-5)
    np.testing.assert_allclose(t["reg_targets"].numpy()[0, 0, 3], math.log(0.4 / 0.45) * 5, atol=1e-4)


def test_balanced_sampler_counts_and_respects_the_indicator():
    tf.random.set_seed(3)
    labels = np.zeros((2, 40), bool)
    labels[0, :10] = True       # image 0: 10 positives, 30 negatives
    labels[1, :2] = True        # image 1: 2 positives, 38 negatives
    indicator = np.ones((2, 40), bool)
    indicator[:, 35:] = False   # e.g. ignored anchors: never sampled
    for _ in range(5):
        got = balanced_sample(indicator, labels, batch_size=16, positive_fraction=0.25).numpy()
        assert not got[:, 35:].any()
        np.testing.assert_array_equal((got & labels).sum(1), [4, 2])      # floor(0.25 * 16) positives at most
        np.testing.assert_array_equal((got & ~labels).sum(1), [12, 14])   # negatives fill the minibatch
    few = balanced_sample(indicator[:, :8], np.zeros((2, 8), bool), 16, 0.5).numpy()
    np.testing.assert_array_equal(few, np.ones((2, 8), bool))  # fewer candidates than the minibatch: all of them
    draws = {tuple(balanced_sample(indicator, labels, 16, 0.25).numpy()[0]) for _ in range(4)}
    assert len(draws) > 1  # random, not the first candidates every time


def test_loss_settings_come_from_the_config():
    resnet = FasterRcnnLossConfig.from_config(
        model_config(load(CONFIGS / "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8" / "pipeline.config"))[1])
    assert resnet.first_stage_localization_loss_weight == 2.0 and resnet.second_stage_localization_loss_weight == 2.0
    assert (resnet.first_stage_minibatch_size, resnet.second_stage_batch_size) == (256, 64)  # protobuf defaults
    assert resnet.classification == "weighted_softmax"
    mask = FasterRcnnLossConfig.from_config(
        model_config(load(CONFIGS / "mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8" / "pipeline.config"))[1])
    assert mask.second_stage_mask_prediction_loss_weight == 4.0
    custom = FasterRcnnLossConfig.from_config(parse(
        "first_stage_minibatch_size: 32 first_stage_positive_balance_fraction: 0.25 second_stage_batch_size: 8 "
        "second_stage_balance_fraction: 0.5 second_stage_classification_loss { weighted_sigmoid { } }"))
    assert (custom.first_stage_minibatch_size, custom.first_stage_positive_balance_fraction) == (32, 0.25)
    assert (custom.second_stage_batch_size, custom.second_stage_balance_fraction) == (8, 0.5)
    assert custom.classification == "weighted_sigmoid"
    from zoo.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="hard_example_miner"):
        FasterRcnnLossConfig.from_config(parse("hard_example_miner { }"))


def test_losses_against_hand_values():
    config = FasterRcnnLossConfig(first_stage_localization_loss_weight=2.0)
    targets = assign_targets(ANCHORS, BOXES, np.zeros_like(CLASSES), WEIGHTS, matcher=RPN_MATCHER, box_coder=CODER,
                             num_classes=1)
    sampled = tf.constant([[True, True, False, True, False]])
    codes = targets["reg_targets"] + 1.0   # smooth-L1 0.5 per code of the positives (anchors 0 and 3)
    rpn = rpn_losses(codes, tf.zeros((1, 5, 2)), targets, sampled, config)
    assert float(rpn["rpn_localization"]) == pytest.approx(2.0 * (2 * 4 * 0.5) / 3)
    assert float(rpn["rpn_objectness"]) == pytest.approx(math.log(2.0), rel=1e-5)  # uniform logits
    # second stage: two images, sampled proposals [B=2, S=2]; class-specific boxes pick the target class
    t = {"cls_targets": tf.constant([[[0, 0, 1], [1, 0, 0]], [[0, 1, 0], [1, 0, 0]]], tf.float32),
         "cls_weights": tf.ones((2, 2)), "reg_targets": tf.zeros((2, 2, 4)),
         "reg_weights": tf.constant([[1.0, 0.0], [1.0, 0.0]]), "matches": tf.constant([[0, -1], [0, -1]])}
    refined = np.zeros((2, 2, 2, 4), np.float32)
    refined[0, 0, 1] = 1.0   # image 0, proposal 0 of class 2 (index 1): off by one in every code
    refined[0, 0, 0] = 9.0   # the other class's box does not count
    in_batch = tf.constant([[True, True], [True, False]])
    out = box_classifier_losses(tf.constant(refined), tf.zeros((2, 2, 3)), t, in_batch, FasterRcnnLossConfig())
    assert float(out["box_localization"]) == pytest.approx(4 * 0.5 / (2 * 2))
    assert float(out["box_classification"]) == pytest.approx(math.log(3) * (2 / 4 + 1 / 2), rel=1e-5)
    # mask: the ground-truth mask's left half is object; the proposal is the left half of the picture
    gt = np.zeros((2, 1, 8, 8), np.uint8)
    gt[:, :, :, :4] = 1
    proposals = tf.constant([[[0, 0, 1, 3 / 7], [0, 0, 0, 0]]] * 2, tf.float32)
    logits = np.full((2, 2, 4, 4, 2), -20.0, np.float32)
    logits[0, 0, ..., 1] = 20.0   # image 0 right for class 2 (its target); class 1's map is ignored
    got = mask_loss(tf.constant(logits), tf.constant(gt), tf.ones((2, 1)), proposals, t, in_batch,
                    FasterRcnnLossConfig(second_stage_mask_prediction_loss_weight=4.0))
    # image 0 is (almost) exact; image 1's single positive (class 1, map 0) is wrong on all 16 cells
    assert float(got) == pytest.approx(4.0 * 20.0, rel=1e-3)


# ------------------------------------------------------------------------------------------ tiny models
class TinyTwoStageExtractor:
    """A stride-16 proposal network (with one BatchNorm) and a one-convolution box classifier."""

    first_stage_features_stride = 16
    name = TINY_TYPE

    def __init__(self, config: object = None) -> None:
        self.config = config

    def preprocess(self, resized_images):
        return tf.cast(resized_images, tf.float32) / 127.5 - 1.0

    def build_proposal_model(self):
        x = keras.Input((None, None, 3))
        y = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(x)
        y = keras.layers.Conv2D(16, 3, strides=4, padding="same")(y)
        y = keras.layers.BatchNormalization()(y)
        return keras.Model(x, keras.layers.ReLU()(y))

    def build_box_classifier_model(self, crop_size=None):
        x = keras.Input((crop_size, crop_size, 16))
        return keras.Model(x, keras.layers.Conv2D(24, 3, padding="same", activation="relu")(x))

    def checkpoint_map(self, proposal_model, classifier_model):
        out = {}
        for scope, model in (("_tiny_proposal", proposal_model), ("_tiny_classifier", classifier_model)):
            for n, layer in enumerate(l for l in model.layers if l.weights):
                for w in layer.weights:
                    out[f"{scope}/layer_with_weights-{n}/{w.name}"] = w
        return out


def register_tiny_extractor() -> None:
    from zoo.models.registry import register_feature_extractor

    register_feature_extractor(TINY_TYPE, meta="faster_rcnn")(TinyTwoStageExtractor)


HYPER = "regularizer { l2_regularizer { weight: 0.0 } } initializer { truncated_normal_initializer { stddev: 0.01 } }"
MASK_OPTIONS = f"""predict_instance_masks: true mask_height: 8 mask_width: 8 mask_prediction_conv_depth: 8
      mask_prediction_num_conv_layers: 2 conv_hyperparams {{ op: CONV {HYPER} }}"""


def tiny_config(num_classes: int = 3, *, masks: bool = False) -> str:
    return f"""
model {{ faster_rcnn {{
  num_classes: {num_classes}
  number_of_stages: {3 if masks else 2}
  image_resizer {{ keep_aspect_ratio_resizer {{ min_dimension: 64 max_dimension: 64 pad_to_max_dimension: true }} }}
  feature_extractor {{ type: "{TINY_TYPE}" batch_norm_trainable: true }}
  first_stage_anchor_generator {{ grid_anchor_generator {{ scales: [0.5, 1.0, 2.0] aspect_ratios: [0.5, 1.0, 2.0]
    height: 32 width: 32 height_stride: 16 width_stride: 16 }} }}
  first_stage_box_predictor_conv_hyperparams {{ op: CONV {HYPER} }}
  clip_anchors_to_image: true
  first_stage_box_predictor_depth: 16
  first_stage_nms_score_threshold: 0.0
  first_stage_nms_iou_threshold: 0.7
  first_stage_max_proposals: 24
  first_stage_minibatch_size: 32
  first_stage_localization_loss_weight: 2.0
  first_stage_objectness_loss_weight: 1.0
  initial_crop_size: 6
  maxpool_kernel_size: 2
  maxpool_stride: 2
  second_stage_batch_size: 12
  second_stage_box_predictor {{ mask_rcnn_box_predictor {{
    fc_hyperparams {{ op: FC regularizer {{ l2_regularizer {{ weight: 0.0 }} }}
      initializer {{ variance_scaling_initializer {{ factor: 1.0 uniform: true mode: FAN_AVG }} }} }}
    {MASK_OPTIONS if masks else ""}
  }} }}
  second_stage_post_processing {{ batch_non_max_suppression {{ score_threshold: 0.0 iou_threshold: 0.6
    max_detections_per_class: 10 max_total_detections: 10 }} score_converter: SOFTMAX }}
  second_stage_localization_loss_weight: 2.0
  second_stage_classification_loss_weight: 1.0
  second_stage_mask_prediction_loss_weight: 4.0
}} }}
train_config {{ batch_size: 2 num_steps: 10 }}
"""


# ------------------------------------------------------------------------------------------ data
def _shapes(root, n=6, seed=4):
    from zoo.datasets.synthetic import make_shapes_dataset

    return make_shapes_dataset(root, n, seed=seed, image_size=(48, 64))


def test_masks_follow_the_boxes_through_augmentation_resize_and_padding(tmp_path):
    from zoo.datasets.coco import CocoDataset
    from zoo.train.augment import AugmentConfig
    from zoo.train.data import InputGeometry
    from zoo.train.faster_rcnn.data import FasterRcnnTrainingData, has_segmentation

    folder = _shapes(tmp_path / "d")
    dataset = CocoDataset(folder / "annotations.json", folder / "images")
    assert has_segmentation(dataset)
    data = FasterRcnnTrainingData(dataset, InputGeometry(64, 64), 3, max_boxes=8, with_masks=True,
                                  augment_config=AugmentConfig(flip_probability=0.5, crop_probability=0.8))
    checked = padded = 0
    for draw in range(12):
        ex = data.example(draw % len(data), draw)
        assert ex["masks"].shape == (8, 64, 64) and ex["masks"].dtype == np.uint8
        rows, cols = (np.round(ex["window"] * 64)).astype(int)
        assert not ex["masks"][:, rows:].any() and not ex["masks"][:, :, cols:].any()  # the padding stays empty
        padded += rows < 64
        for box, mask, weight in zip(ex["boxes"], ex["masks"], ex["mask_weights"]):
            if not weight:
                continue
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            extent = np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / 64.0
            # the mask fills its box, flipped, cropped and zoomed alike (nearest resampling may drop a thin tip)
            np.testing.assert_allclose(extent, box, atol=3.5 / 64)
            checked += 1
    assert checked >= 10 and padded > 0
    plain = FasterRcnnTrainingData(dataset, InputGeometry(64, 64), 3, max_boxes=8, augment_config=None)
    assert "masks" not in plain.example(0, 0) and "masks" not in plain._specs()


def test_a_box_without_segmentation_gets_no_mask_weight(tmp_path):
    import json

    from zoo.datasets.coco import CocoDataset
    from zoo.train.augment import AugmentConfig
    from zoo.train.data import InputGeometry
    from zoo.train.faster_rcnn.data import FasterRcnnTrainingData

    folder = _shapes(tmp_path / "d", 1, seed=0)
    gt = json.loads((folder / "annotations.json").read_text())
    assert len(gt["annotations"]) >= 2
    del gt["annotations"][0]["segmentation"]
    (tmp_path / "partial.json").write_text(json.dumps(gt))
    dataset = CocoDataset(tmp_path / "partial.json", folder / "images")
    data = FasterRcnnTrainingData(dataset, InputGeometry(64, 64), 3, max_boxes=8, with_masks=True,
                                  augment_config=AugmentConfig(crop_probability=0.0, flip_probability=1.0))
    ex = data.example(0, 0)
    n = len(gt["annotations"])
    np.testing.assert_array_equal(ex["mask_weights"], [0.0] + [1.0] * (n - 1) + [0.0] * (8 - n))
    assert not ex["masks"][0].any() and ex["masks"][1].max() == 1


def test_segmentations_decode_from_polygons_and_rle():
    from pycocotools import mask as mask_utils

    from zoo.train.faster_rcnn.data import decode_segmentation

    square = decode_segmentation([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8)
    assert square.shape == (6, 8) and square[2, 3] == 1 and square[5, 7] == 0
    rle = mask_utils.encode(np.asfortranarray(square))
    np.testing.assert_array_equal(decode_segmentation({"size": rle["size"], "counts": rle["counts"].decode()}, 6, 8),
                                  square)
    assert decode_segmentation([], 6, 8) is None and decode_segmentation([[1, 2]], 6, 8) is None


# ------------------------------------------------------------------------------------------ training
LABELS = {1: "circle", 2: "square", 3: "triangle"}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """Tiny Faster R-CNN and Mask R-CNN model folders trained elsewhere on 5 classes (the stand-in for a
    zoo checkpoint), the tiny configs, and a shapes dataset of 3 classes with polygons."""
    from zoo.exporting import export_model
    from zoo.models.builder import build_model

    register_tiny_extractor()
    root = tmp_path_factory.mktemp("frcnn_train")
    keras.utils.set_random_seed(1)
    folders = {}
    for kind, masks in (("faster", False), ("mask", True)):
        config = parse(tiny_config(5, masks=masks))
        net = build_model(config, num_classes=5)
        (root / f"{kind}.config").write_text(tiny_config(3, masks=masks))
        folders[kind] = export_model(net, root / f"{kind}_5", config=config, label_map={i: f"c{i}" for i in range(1, 6)},
                                     saved_model=False).folder
    return {"root": root, "data": _shapes(root / "shapes", 6), **folders}


def _losses_fell(history, key, factor):
    first, last = history[0][key], history[-1][key]
    print(f"{key}: {first:.4f} -> {last:.4f}")
    return np.isfinite(first) and last < factor * first


def _finetuned(folder, data, root, **kwargs):
    """``folder``'s 5-class model loaded for the dataset's 3 classes (class-dependent heads re-initialised
    with the config's initializers) and fine-tuned; the weights before training and what was redrawn."""
    import zoo
    from zoo.train.new_head import reinitialize_new_head

    keras.utils.set_random_seed(0)
    det = zoo.load(folder, num_classes=3, label_map=LABELS)
    redrawn = reinitialize_new_head(det, load(det.model_dir / "pipeline.config"))
    before = {id(v): np.array(v.numpy()) for v in det.net.keras_model.weights}
    tuned = zoo.finetune(det, data / "annotations.json", images=data / "images", batch_size=2, progress=False,
                         recalibrate_batches=2, **kwargs)
    return {"det": det, "tuned": tuned, "before": before, "redrawn": redrawn,
            "skipped": list(det.restore_report.skipped)}


@pytest.mark.slow
def test_faster_rcnn_heads_training_lowers_the_loss_and_moves_only_the_heads(tiny_folders):
    from zoo.train.trainable import head_layers

    run = _finetuned(tiny_folders["faster"], tiny_folders["data"], tiny_folders["root"], steps=20,
                     learning_rate=2e-2, schedule="constant", warmup_steps=0, trainable="heads")
    history = run["tuned"].finetune_result.history
    assert set(history[0]) == {"step", "rpn_localization", "rpn_objectness", "box_localization",
                               "box_classification", "total"}
    assert _losses_fell(history, "total", 0.85)
    assert _losses_fell(history, "box_classification", 0.8)
    # a new class count: the class head and the class-specific box head are new (drawn with the
    # config's fc initializer); everything else came from the checkpoint
    skipped = run["skipped"]
    assert len(skipped) == 4 and all("_mask_rcnn_box_predictor" in k for k in skipped)
    assert sorted(run["redrawn"]) == sorted(k for k in skipped if k.endswith("kernel"))
    net = run["det"].net
    heads = {id(v) for layer in head_layers(net) for v in layer.weights}
    assert {id(v) for v in (net.rpn_box_head.kernel, net.rpn_class_head.bias, net.class_head.kernel,
                            net.box_head.kernel)} <= heads and len(heads) == 8
    now = {id(v): v.numpy() for v in net.keras_model.weights}
    changed = {i for i, w in run["before"].items() if not np.array_equal(w, now[i])}
    assert changed == heads  # every head variable moved; backbone, RPN convolution and BatchNorm did not
    assert run["tuned"].finetune_result.selection["frozen_batch_norms"] == 1


@pytest.fixture(scope="module")
def mask_run(tiny_folders):
    """The Mask R-CNN fine-tuned (everything trainable) with out_dir: exported, packed and loaded back."""
    return _finetuned(tiny_folders["mask"], tiny_folders["data"], tiny_folders["root"], steps=20,
                      learning_rate=3e-3, saved_model=False, out_dir=tiny_folders["root"] / "out")


@pytest.mark.slow
def test_mask_rcnn_training_lowers_box_and_mask_losses(mask_run):
    history = mask_run["tuned"].finetune_result.history
    assert "mask" in history[0] and all(np.isfinite(h["mask"]) for h in history)
    assert _losses_fell(history, "total", 0.8)
    assert _losses_fell(history, "mask", 0.8)
    skipped = mask_run["skipped"]  # class, box and last mask-convolution kernels and biases
    assert len(skipped) == 6 and sum("_third_stage_heads" in k for k in skipped) == 2
    assert sorted(mask_run["redrawn"]) == sorted(k for k in skipped if k.endswith("kernel"))


@pytest.mark.slow
def test_fine_tuned_mask_rcnn_exports_and_loads_back_with_the_same_detections(mask_run, tiny_folders):
    from PIL import Image

    tuned, trained = mask_run["tuned"], mask_run["det"]
    result = tuned.finetune_result
    assert result.tarball.is_file() and result.registry.is_file()
    exported = load(result.model_dir / "pipeline.config")
    assert exported.get("model.faster_rcnn.num_classes") == 3 and not tuned.restore_report.skipped
    for path in sorted((tiny_folders["data"] / "images").iterdir())[:1]:
        image = np.asarray(Image.open(path).convert("RGB"))
        mine, loaded = trained.detect(image), tuned.detect(image)
        assert len(mine) == len(loaded) > 0
        np.testing.assert_allclose(loaded.scores, mine.scores, atol=1e-5)
        np.testing.assert_allclose(loaded.boxes_normalized, mine.boxes_normalized, atol=1e-5)
        assert list(loaded.labels) == list(mine.labels) and set(mine.labels) <= set(LABELS.values())
        assert loaded.masks is not None and loaded.masks.shape[0] == len(loaded)
        np.testing.assert_allclose(loaded.masks, mine.masks, atol=1e-4)


def test_mask_loss_is_skipped_without_segmentations(tiny_folders, tmp_path):
    import json

    from zoo.datasets.coco import CocoDataset
    from zoo.train.families import family_parts, training_geometry
    from zoo.models.builder import build_model

    gt = json.loads((tiny_folders["data"] / "annotations.json").read_text())
    for ann in gt["annotations"]:
        ann.pop("segmentation", None)
    (tmp_path / "boxes.json").write_text(json.dumps(gt))
    dataset = CocoDataset(tmp_path / "boxes.json", tiny_folders["data"] / "images")
    config = parse(tiny_config(3, masks=True))
    net = build_model(config, num_classes=3)
    data, objective, freeze = family_parts("faster_rcnn", net, config, dataset, training_geometry(net, None), 3, False, 0)
    assert not freeze  # batch_norm_trainable: true
    batch = next(iter(data.tf_dataset(2, shuffle=False, repeat=False, augmented=False)))
    losses = objective(batch, training=False)
    assert "masks" not in batch and "mask" not in losses
    assert np.isfinite(float(losses["total"]))


@pytest.mark.slow
def test_cli_finetunes_a_faster_rcnn_model(tiny_folders, tmp_path, capsys):
    from zoo.cli import main

    data = tiny_folders["data"]
    code = main(["finetune", "--model", str(tiny_folders["faster"]), "--annotations", str(data / "annotations.json"),
                 "--images", str(data / "images"), "--out", str(tmp_path / "out"), "--steps", "2",
                 "--batch-size", "2", "--no-saved-model", "--name", "tiny_frcnn"])
    out = capsys.readouterr().out
    assert code == 0 and "trained 2 steps" in out
    assert (tmp_path / "out" / "tiny_frcnn.tar.gz").is_file()
    assert load(tmp_path / "out" / "tiny_frcnn" / "pipeline.config").get("model.faster_rcnn.num_classes") == 3


def test_cli_no_longer_refuses_zoo_faster_rcnn_models(tmp_path, capsys):
    from zoo.cli import main
    from zoo.fine_tuning import check_trainable

    check_trainable("faster_rcnn_resnet50_640")
    check_trainable("mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    code = main(["finetune", "--model", "faster_rcnn_resnet50_640", "--annotations", str(broken),
                 "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "cannot fine-tune" not in err and "broken.json" in err and "\n" not in err
