"""SSD-family training: anchor matching and box encoding against hand-computed values, the focal loss
against its formula, hard example mining, loss settings read from pipeline.config, and a few-shot
fine-tune of the SSD MobileNet V2 FPNLite 320 stand-in archive that trains only the prediction heads."""
from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS, FIXTURES
from zoo.pipeline_config import load, model_config, parse
from zoo.train.ssd.losses import (
    HardExampleMining,
    SsdLossConfig,
    mine_image,
    sigmoid_focal_loss,
    smooth_l1_loss,
    ssd_loss,
)
from zoo.train.ssd.targets import IGNORED, UNMATCHED, ArgmaxMatcher, assign_targets, iou

FPNLITE = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"

# 2 boxes (+ 1 padding row) x 6 anchors
SIMILARITY = np.array([[
    [0.70, 0.45, 0.10, 0.30, 0.00, 0.45],
    [0.20, 0.50, 0.35, 0.60, 0.00, 0.42],
    [0.99, 0.99, 0.99, 0.99, 0.99, 0.99],   # padding: never matched
]], np.float32)
VALID = np.array([[True, True, False]])


def _box_coder():
    from zoo.models.box_coders import FasterRcnnBoxCoder

    return FasterRcnnBoxCoder((10.0, 10.0, 5.0, 5.0))


def test_matcher_thresholds_and_ignored_band():
    matcher = ArgmaxMatcher(matched_threshold=0.5, unmatched_threshold=0.4)
    got = matcher.match(SIMILARITY, VALID).numpy()[0]
    # a0 0.70 -> box 0; a1 0.50 (>= matched) -> box 1; a2 0.35 < 0.4 -> unmatched;
    # a3 0.60 -> box 1; a4 0 -> unmatched; a5 0.45 in [0.4, 0.5) -> ignored
    np.testing.assert_array_equal(got, [0, 1, UNMATCHED, 1, UNMATCHED, IGNORED])
    swapped = ArgmaxMatcher(0.5, 0.4, negatives_lower_than_unmatched=False).match(SIMILARITY, VALID).numpy()[0]
    np.testing.assert_array_equal(swapped, [0, 1, IGNORED, 1, IGNORED, UNMATCHED])
    every = ArgmaxMatcher(matched_threshold=None).match(SIMILARITY, VALID).numpy()[0]
    np.testing.assert_array_equal(every, [0, 1, 1, 1, 0, 0])  # no thresholds: the best box (first on ties)
    nothing = ArgmaxMatcher(0.5, 0.4).match(SIMILARITY, np.zeros((1, 3), bool)).numpy()[0]
    np.testing.assert_array_equal(nothing, [UNMATCHED] * 6)


def test_force_match_gives_every_box_its_best_anchor():
    sim = np.array([[
        [0.70, 0.55, 0.00],
        [0.00, 0.52, 0.00],   # best anchor a1, which box 0 wins by argmax: forced to box 1
        [0.00, 0.05, 0.38],   # best anchor a2, below every threshold: forced to box 2
        [0.65, 0.00, 0.00],   # best anchor a0, also box 0's best: the first box keeps it
    ]], np.float32)
    valid = np.ones((1, 4), bool)
    plain = ArgmaxMatcher(0.5, 0.4).match(sim, valid).numpy()[0]
    np.testing.assert_array_equal(plain, [0, 0, UNMATCHED])
    forced = ArgmaxMatcher(0.5, 0.4, force_match_for_each_row=True).match(sim, valid).numpy()[0]
    np.testing.assert_array_equal(forced, [0, 1, 2])


def test_matcher_reads_the_config_and_refuses_inconsistent_thresholds():
    cfg = load(CONFIGS / FPNLITE / "pipeline.config")
    matcher = ArgmaxMatcher.from_config(model_config(cfg)[1]["matcher"])
    assert matcher == ArgmaxMatcher(0.5, 0.5, True, True, True)
    ignore = ArgmaxMatcher.from_config(parse("argmax_matcher { ignore_thresholds: true }"))
    assert ignore.matched_threshold is None
    from zoo.errors import ConfigError, UnsupportedModelError

    with pytest.raises(ConfigError, match="unmatched_threshold"):
        ArgmaxMatcher(0.4, 0.5)
    with pytest.raises(UnsupportedModelError, match="bipartite_matcher"):
        ArgmaxMatcher.from_config(parse("bipartite_matcher { }"))


ANCHORS = np.array([[0, 0, .5, .5], [0, .5, .5, 1], [.5, 0, 1, .5], [.5, .5, 1, 1]], np.float32)
GT_BOXES = np.array([[[0, 0, .5, .4], [.5, .5, 1, .725], [0, 0, 0, 0]]], np.float32)  # last row: padding
GT_CLASSES = np.array([[2, 0, 0]], np.int32)
GT_WEIGHTS = np.array([[1, 1, 0]], np.float32)


def test_iou_against_hand_values():
    got = iou(GT_BOXES, ANCHORS).numpy()[0]
    np.testing.assert_allclose(got[0], [0.8, 0, 0, 0], atol=1e-6)      # 0.5*0.4 / 0.25
    np.testing.assert_allclose(got[1], [0, 0, 0, 0.45], atol=1e-6)     # 0.5*0.225 / 0.25
    np.testing.assert_array_equal(got[2], [0, 0, 0, 0])                # zero-area padding


@pytest.mark.parametrize("background_as_zeros", [False, True])
def test_assign_targets_encodes_boxes_and_classes(background_as_zeros):
    t = assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, GT_WEIGHTS, num_classes=3,
                       matcher=ArgmaxMatcher(0.5, 0.4), box_coder=_box_coder(),
                       encode_background_as_zeros=background_as_zeros)
    np.testing.assert_array_equal(t["matches"].numpy()[0], [0, UNMATCHED, UNMATCHED, IGNORED])
    # anchor 0: centre (.25, .25) size .5 x .5; box centre (.25, .2) size .5 x .4
    expected = [0.0, (0.2 - 0.25) / 0.5 * 10, math.log(1.0) * 5, math.log(0.4 / 0.5) * 5]
    np.testing.assert_allclose(t["reg_targets"].numpy()[0, 0], expected, atol=1e-4)
    np.testing.assert_array_equal(t["reg_targets"].numpy()[0, 1:], np.zeros((3, 4)))
    np.testing.assert_array_equal(t["reg_weights"].numpy()[0], [1, 0, 0, 0])
    np.testing.assert_array_equal(t["cls_weights"].numpy()[0], [1, 1, 1, 0])  # ignored anchor: weight 0
    background = [0, 0, 0, 0] if background_as_zeros else [1, 0, 0, 0]
    np.testing.assert_array_equal(t["cls_targets"].numpy()[0], [[0, 0, 0, 1], background, background, background])
    forced = assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, GT_WEIGHTS, num_classes=3,
                            matcher=ArgmaxMatcher(0.5, 0.4, force_match_for_each_row=True), box_coder=_box_coder(),
                            encode_background_as_zeros=background_as_zeros)
    np.testing.assert_array_equal(forced["matches"].numpy()[0], [0, UNMATCHED, UNMATCHED, 1])
    np.testing.assert_array_equal(forced["cls_targets"].numpy()[0, 3], [0, 1, 0, 0])  # class 0 -> slot 1
    np.testing.assert_array_equal(forced["reg_weights"].numpy()[0], [1, 0, 0, 1])


def test_without_background_class_unmatched_anchors_are_all_zero():
    t = assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, GT_WEIGHTS, num_classes=3,
                       matcher=ArgmaxMatcher(0.5, 0.4), box_coder=_box_coder(), add_background_class=False)
    np.testing.assert_array_equal(t["cls_targets"].numpy()[0], [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_focal_loss_matches_its_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (2, 7, 4)).astype(np.float32)
    targets = (rng.random((2, 7, 4)) < 0.3).astype(np.float32)
    weights = rng.random((2, 7)).astype(np.float32)
    got = sigmoid_focal_loss(logits, targets, weights, gamma=1.5, alpha=0.25).numpy()
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    ce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    p_t = np.where(targets == 1, p, 1 - p)
    alpha_t = np.where(targets == 1, 0.25, 0.75)
    expected = alpha_t * (1 - p_t) ** 1.5 * ce * weights[..., None]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    no_alpha = sigmoid_focal_loss(logits, targets, weights, gamma=0.0, alpha=None).numpy()
    np.testing.assert_allclose(no_alpha, ce * weights[..., None], rtol=1e-4, atol=1e-6)


def test_smooth_l1_matches_huber():
    pred = np.array([[[0.0, 0.5, 3.0, -2.0]]], np.float32)
    target = np.zeros((1, 1, 4), np.float32)
    got = smooth_l1_loss(pred, target, np.array([[2.0]], np.float32), delta=1.0).numpy()
    np.testing.assert_allclose(got, [[2.0 * (0 + 0.125 + 2.5 + 1.5)]], rtol=1e-6)


def _far_apart_boxes(n):
    return np.array([[i, i, i + 0.5, i + 0.5] for i in range(n)], np.float32)


def test_hard_example_mining_keeps_top_negatives_per_positive():
    cls = np.array([0.9, 5.0, 4.0, 0.1, 3.0, 2.0, 9.0], np.float32)
    loc = np.zeros(7, np.float32)
    matches = np.array([0, UNMATCHED, UNMATCHED, 1, UNMATCHED, UNMATCHED, IGNORED], np.int32)
    mining = HardExampleMining(num_hard_examples=None, iou_threshold=0.99, loss_type="classification",
                               max_negatives_per_positive=1, min_negatives_per_image=0)
    keep = set(mine_image(loc, cls, _far_apart_boxes(7), matches, mining).numpy().tolist())
    # 2 positives (0, 3) -> the 2 highest-loss negatives (1, 2); the ignored anchor 6 is dropped
    assert keep == {0, 3, 1, 2}
    no_positive = np.array([UNMATCHED] * 7, np.int32)
    at_least = HardExampleMining(None, 0.99, "classification", max_negatives_per_positive=3, min_negatives_per_image=2)
    assert set(mine_image(loc, cls, _far_apart_boxes(7), no_positive, at_least).numpy().tolist()) == {6, 1}
    # NMS on the predicted boxes: an overlapping lower-loss duplicate is not mined twice
    boxes = _far_apart_boxes(7)
    boxes[2] = boxes[1]
    top3 = HardExampleMining(num_hard_examples=3, iou_threshold=0.5, loss_type="classification")
    assert set(mine_image(loc, cls, boxes, no_positive, top3).numpy().tolist()) == {6, 1, 4}


def test_loss_config_is_read_from_pipeline_config():
    fpnlite = SsdLossConfig.from_config(model_config(load(CONFIGS / FPNLITE / "pipeline.config"))[1])
    assert (fpnlite.classification, fpnlite.gamma, fpnlite.alpha) == ("weighted_sigmoid_focal", 2.0, 0.25)
    assert fpnlite.localization == "weighted_smooth_l1" and fpnlite.normalize_loc_by_codesize
    assert fpnlite.hard_example_mining is None
    effdet = SsdLossConfig.from_config(model_config(load(CONFIGS / "efficientdet_d0_coco17_tpu-32" / "pipeline.config"))[1])
    assert effdet.gamma == 1.5
    mined = SsdLossConfig.from_config(parse("""
      normalize_loss_by_num_matches: true
      loss { classification_loss { weighted_sigmoid { } } localization_loss { weighted_smooth_l1 { delta: 0.5 } }
             hard_example_miner { num_hard_examples: 3000 iou_threshold: 0.99 loss_type: CLASSIFICATION
                                  max_negatives_per_positive: 3 min_negatives_per_image: 3 }
             classification_weight: 1.0 localization_weight: 2.0 }"""))
    assert mined.classification == "weighted_sigmoid" and mined.delta == 0.5 and mined.localization_weight == 2.0
    assert mined.hard_example_mining == HardExampleMining(3000, 0.99, "classification", 3.0, 3)
    from zoo.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="weighted_iou"):
        SsdLossConfig.from_config(parse("loss { localization_loss { weighted_iou { } } }"))


def test_ssd_loss_normalizes_by_matches_and_code_size():
    targets = assign_targets(ANCHORS, GT_BOXES, GT_CLASSES, GT_WEIGHTS, num_classes=3,
                             matcher=ArgmaxMatcher(0.5, 0.4, force_match_for_each_row=True), box_coder=_box_coder())
    codes = targets["reg_targets"] + 1.0     # every matched code off by 1: smooth-L1 0.5 per code
    logits = tf.zeros((1, 4, 4))
    config = SsdLossConfig(normalize_loc_by_codesize=True, localization_weight=2.0)
    out = ssd_loss(codes, logits, targets, config)
    assert float(out["localization"]) == pytest.approx(2.0 * (2 * 4 * 0.5) / (2 * 4))
    per_entry = sigmoid_focal_loss(logits, targets["cls_targets"], targets["cls_weights"]).numpy().sum()
    assert float(out["classification"]) == pytest.approx(per_entry / 2, rel=1e-5)
    assert float(out["total"]) == pytest.approx(float(out["localization"]) + float(out["classification"]))


# ------------------------------------------------------------------------------------------ few-shot
LABELS = {1: "circle", 2: "square", 3: "triangle"}


@pytest.fixture(scope="module")
def few_shot(tmp_path_factory):
    """The few-shot recipe on the stand-in zoo archive (extracted into a private cache): backbone,
    FPN, towers and box head restored, class head new, only the box and class heads trained."""
    import zoo
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.train.families import training_geometry
    from zoo.train.new_head import reinitialize_new_head
    from zoo.train.trainable import select_trainable
    from zoo.train.ssd.data import BoxTrainingData
    from zoo.train.ssd.objective import SsdObjective

    root = tmp_path_factory.mktemp("ssd_few_shot")
    train = make_shapes_dataset(root / "train", 4, seed=5, image_size=160)
    det = zoo.load(str(FIXTURES / "tarballs" / f"{FPNLITE}.tar.gz"), num_classes=3, label_map=LABELS,
                   cache_dir=root / "cache")
    config = load(det.model_dir / "pipeline.config")
    redrawn = reinitialize_new_head(det, config)  # the config's initializer, as zoo.finetune does
    net = det.net
    objective = SsdObjective(net, model_config(config)[1])
    data = BoxTrainingData(CocoDataset(train / "annotations.json", train / "images"), training_geometry(net, None), 3,
                           augment_config=None)
    batch = next(iter(data.tf_dataset(4, shuffle=False, repeat=False, augmented=False)))
    select_trainable(net, "heads")  # as zoo.finetune will: the regularised kernels are the heads' on both sides
    before = {k: float(v) for k, v in objective(batch, training=False).items()}
    weights = {id(v): np.array(v.numpy()) for v in net.keras_model.weights}
    skipped = set(det.restore_report.skipped)
    tuned = zoo.finetune(det, train / "annotations.json", images=train / "images", steps=8, batch_size=2,
                         learning_rate=5e-3, trainable="heads", progress=False)
    after = {k: float(v) for k, v in objective(batch, training=False).items()}
    return {"det": tuned, "net": net, "config": config, "before": before, "after": after, "weights": weights,
            "skipped": skipped, "redrawn": redrawn, "train": train, "root": root}


@pytest.mark.slow
def test_few_shot_finetune_lowers_the_loss_and_trains_only_the_heads(few_shot):
    from zoo.train.trainable import head_layers

    before, after, net = few_shot["before"], few_shot["after"], few_shot["net"]
    print(f"loss before {before} after {after}")
    assert few_shot["skipped"] and all("_class_predictor_layers" in k for k in few_shot["skipped"])  # only the class head is new
    assert few_shot["redrawn"] and all(k in few_shot["skipped"] for k in few_shot["redrawn"])
    assert after["total"] < 0.85 * before["total"]
    # the config's L2 regularisation (weight 4e-5) of the trainable kernels, here the two heads'
    kernels = [v for layer in head_layers(net) for v in layer.weights if "kernel" in v.path]
    expected = sum(0.5 * 4e-5 * float(np.sum(np.square(few_shot["weights"][id(v)]))) for v in kernels)
    assert before["regularization"] == pytest.approx(expected, rel=1e-4)
    assert after["classification"] < before["classification"]
    assert after["localization"] < before["localization"]
    heads = {id(v) for layer in head_layers(net) for v in layer.weights}
    now = {id(v): v.numpy() for v in net.keras_model.weights}
    changed = {i for i, w in few_shot["weights"].items() if not np.array_equal(w, now[i])}
    assert changed == heads  # every head variable moved, nothing else (BatchNorm statistics included)
    selection = few_shot["det"].finetune_result.selection
    assert selection["trainable"] == len(heads) and selection["frozen_batch_norms"] > 0


@pytest.mark.slow
def test_fine_tuned_ssd_round_trips_through_the_zoo_layout(few_shot):
    import zoo
    from PIL import Image

    from zoo.exporting import export_model

    folder = few_shot["root"] / "exported"
    export_model(few_shot["det"], folder, config=few_shot["config"], label_map=LABELS, saved_model=False)
    exported = load(folder / "pipeline.config")
    assert exported.get("model.ssd.num_classes") == 3
    assert exported.get("model.ssd.image_resizer.fixed_shape_resizer.height") == 320
    back = zoo.load(folder)  # strict: every key of the checkpoint fits
    assert not back.restore_report.skipped
    image = np.asarray(Image.open(next((few_shot["train"] / "images").iterdir())).convert("RGB"))
    mine, loaded = few_shot["det"].detect(image), back.detect(image)
    assert len(mine) == len(loaded) > 0
    np.testing.assert_allclose(loaded.scores, mine.scores, atol=1e-5)
    np.testing.assert_allclose(loaded.boxes_normalized, mine.boxes_normalized, atol=1e-5)
    assert list(loaded.labels) == list(mine.labels) and set(mine.labels) <= set(LABELS.values())


def test_trainable_choices_are_checked_before_any_work(tmp_path):
    import zoo
    from zoo.errors import ArgumentError
    from zoo.fine_tuning import check_trainable
    from zoo.train.trainable import check_trainable_selection

    check_trainable(FPNLITE)  # SSD-family models can be fine-tuned
    assert check_trainable_selection("heads") == "heads"
    assert check_trainable_selection(["model/_box_predictor/*"]) == ("model/_box_predictor/*",)
    for bad in ("head", [], [""], 3):
        with pytest.raises(ArgumentError, match="trainable must be one of all, heads"):
            zoo.finetune(FPNLITE, tmp_path / "missing.json", images=tmp_path, steps=1, trainable=bad)


@pytest.mark.slow
def test_trainable_patterns_and_frozen_batch_norm(few_shot):
    import keras

    from zoo.errors import ArgumentError
    from zoo.train.trainable import select_trainable

    net = few_shot["net"]
    box_head = select_trainable(net, ["model/_box_predictor/_box_prediction_head/*"])
    assert box_head["trainable"] == 3  # depthwise and pointwise kernels and bias of the box head
    assert {v.path.split("/")[0] for v in net.keras_model.trainable_variables} == {"BoxPredictor"}
    everything = select_trainable(net, "all")
    bns = [l for l in net.keras_model._flatten_layers() if isinstance(l, keras.layers.BatchNormalization)]
    assert everything["frozen_batch_norms"] == 0 and all(l.trainable for l in bns)
    bn_parameters = sum(len(l.trainable_weights) for l in bns)  # gamma and beta
    assert bn_parameters > 0
    frozen = select_trainable(net, "all", freeze_batchnorm=True)
    assert frozen["frozen_batch_norms"] == len(bns) and not any(l.trainable for l in bns)
    assert frozen["trainable"] == everything["trainable"] - bn_parameters
    with pytest.raises(ArgumentError, match="selects no variable"):
        select_trainable(net, ["no/such/*"])


def test_box_training_data_scales_boxes_and_reports_the_covered_window(tmp_path):
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.train.data import InputGeometry
    from zoo.train.ssd.data import BoxTrainingData

    folder = make_shapes_dataset(tmp_path / "wide", 1, seed=2, image_size=(32, 64))
    dataset = CocoDataset(folder / "annotations.json", folder / "images")
    data = BoxTrainingData(dataset, InputGeometry(64, 64, "keep_aspect_ratio"), 3, max_boxes=10,
                           augment_config=None)
    ex = data.example(0, 0, augmented=False)
    anns = dataset.annotations(dataset.image_ids[0])
    n = len(anns)
    np.testing.assert_allclose(ex["window"], [0.5, 1.0])  # a 32x64 picture fills the top half of 64x64
    np.testing.assert_array_equal(ex["weights"], [1.0] * n + [0.0] * (10 - n))
    x, y, w, h = anns[0]["bbox"]
    np.testing.assert_allclose(ex["boxes"][0], [y / 32 * 0.5, x / 64, (y + h) / 32 * 0.5, (x + w) / 64], atol=1e-6)
    assert ex["classes"][0] == sorted(dataset.categories).index(anns[0]["category_id"])
    assert ex["image"].shape == (64, 64, 3) and not ex["image"][32:].any()


def test_cli_refuses_an_unknown_trainable_choice(tmp_path, capsys):
    from zoo.cli import main
    from zoo.datasets.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "d", 1, seed=1, image_size=64)
    code = main(["finetune", "--model", FPNLITE, "--annotations", str(data / "annotations.json"),
                 "--images", str(data / "images"), "--out", str(tmp_path / "out"), "--steps", "1",
                 "--trainable", "head"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--trainable must be one of all, heads" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
