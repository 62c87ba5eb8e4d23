"""CenterNet target assignment, losses, augmentation and the training input pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.train.augment import (
    AugmentConfig,
    Sample,
    augment,
    color_jitter,
    crop,
    horizontal_flip,
)
from zoo.train.targets import (
    center_targets,
    draw_gaussian,
    gaussian_radius,
    gaussian_sigma,
)


# ----------------------------------------------------------------------------- targets
def test_gaussian_radius_and_sigma():
    # 10x10 box at IoU 0.7: the third (one corner in, one out) root is the smallest, ~2.73
    assert float(gaussian_radius(10.0, 10.0, 0.7)) == pytest.approx((-28 + np.sqrt(784 + 336)) / 2, rel=1e-6)
    assert float(gaussian_sigma(10.0, 10.0, 0.7)) == pytest.approx(5 / 6)
    assert gaussian_radius(40.0, 60.0, 0.7) > gaussian_radius(20.0, 30.0, 0.7)  # larger boxes, larger radius
    assert gaussian_radius(20.0, 30.0, 0.9) < gaussian_radius(20.0, 30.0, 0.5)   # stricter IoU, smaller radius
    assert float(gaussian_sigma(0.5, 0.5)) == pytest.approx(1 / 6)               # tiny boxes: one-cell peak


def test_center_targets_peaks_sizes_and_offsets():
    boxes = np.array([[0.10, 0.20, 0.50, 0.60], [0.55, 0.55, 0.95, 0.75]], np.float32)
    t = center_targets(boxes, np.array([2, 0]), (32, 32), 3, max_boxes=5)
    assert t.heatmap.shape == (32, 32, 3) and t.weights.tolist() == [1, 1, 0, 0, 0]
    cy, cx = 0.30 * 32, 0.40 * 32
    assert t.indices[0].tolist() == [int(cy), int(cx)]
    assert t.heatmap[int(cy), int(cx), 2] == 1.0
    assert t.heatmap[..., 1].max() == 0.0            # no object of class 1
    assert np.count_nonzero(t.heatmap == 1.0) == 2   # exactly one peak per object
    np.testing.assert_allclose(t.scale[0], [0.4 * 32, 0.4 * 32], rtol=1e-5)
    np.testing.assert_allclose(t.offset[0], [cy - int(cy), cx - int(cx)], atol=1e-5)
    np.testing.assert_allclose(t.scale[1], [0.4 * 32, 0.2 * 32], rtol=1e-5)
    # values fall off with distance from the peak
    row, col = t.indices[0]
    assert 0 < t.heatmap[row, col + 2, 2] < t.heatmap[row, col + 1, 2] < 1


def test_center_targets_ignores_bad_boxes_and_caps_count():
    boxes = np.array([[0.1, 0.1, 0.1, 0.4], [0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.4, 0.4], [0.5, 0.5, 0.7, 0.7]])
    t = center_targets(boxes, np.array([0, 5, 1, 1]), (16, 16), 2, max_boxes=1)
    assert t.weights.sum() == 1  # zero-height and out-of-range class skipped, then the cap
    assert t.heatmap[..., 0].max() == 0


def test_draw_gaussian_keeps_maximum():
    hm = np.zeros((9, 9), np.float32)
    draw_gaussian(hm, 4, 4, 1.0)
    draw_gaussian(hm, 4, 6, 1.0)
    assert hm[4, 4] == 1.0 and hm[4, 6] == 1.0 and 0 < hm[4, 5] < 1


def test_keypoint_targets():
    boxes = np.array([[0.2, 0.2, 0.6, 0.6]])
    kps = np.array([[[0.3, 0.3], [0.5, 0.55], [0.9, 0.9]]])
    vis = np.array([[True, True, False]])
    t = center_targets(boxes, [0], (20, 20), 1, max_boxes=2, keypoints=kps, keypoint_visibility=vis)
    assert t.keypoint_heatmap.shape == (20, 20, 3)
    assert t.keypoint_weights[0].tolist() == [1, 1, 0]
    assert t.keypoint_heatmap[6, 6, 0] == 1.0 and t.keypoint_heatmap[..., 2].max() == 0
    np.testing.assert_allclose(t.keypoint_regression[0, 1], [10.0 - 8, 11.0 - 8], atol=1e-5)


# ----------------------------------------------------------------------------- losses
def test_focal_loss_rewards_correct_heatmaps():
    import tensorflow as tf
    from zoo.train.losses import focal_loss_sum

    target = np.zeros((1, 8, 8, 1), np.float32)
    target[0, 3, 3, 0] = 1.0
    target[0, 3, 4, 0] = 0.6
    good = np.full_like(target, -6.0)
    good[0, 3, 3, 0] = 6.0
    bad = -good
    lg, lb = float(focal_loss_sum(good, target)), float(focal_loss_sum(bad, target))
    assert 0 <= lg < 0.05 < lb
    # near-peak negatives are penalised less than far negatives
    near = np.full_like(target, -6.0)
    near[0, 3, 4, 0] = 3.0
    far = np.full_like(target, -6.0)
    far[0, 6, 6, 0] = 3.0
    assert float(focal_loss_sum(near, target)) < float(focal_loss_sum(far, target))
    # exact value for one positive cell: -(1-p)^2 log p
    one = focal_loss_sum(tf.constant([[0.0]]), tf.constant([[1.0]]))
    assert float(one) == pytest.approx(0.25 * np.log(2.0), rel=1e-5)


def test_centernet_loss_terms_and_weights():
    import tensorflow as tf
    from tests.conftest import CONFIGS
    from zoo.pipeline_config import load, model_config
    from zoo.train.losses import LossWeights, centernet_loss

    t = center_targets(np.array([[0.25, 0.25, 0.75, 0.5]]), [1], (8, 8), 2, max_boxes=4)
    batch = {k: tf.constant(v[None]) for k, v in t.as_dict().items()}
    scale = np.zeros((1, 8, 8, 2), np.float32)
    offset = np.zeros((1, 8, 8, 2), np.float32)
    row, col = t.indices[0]
    scale[0, row, col] = t.scale[0]
    offset[0, row, col] = t.offset[0]
    logits = np.where(t.heatmap[None] == 1.0, 8.0, -8.0).astype(np.float32)
    perfect = centernet_loss({"object_center": logits, "box/scale": scale, "box/offset": offset}, batch)
    assert float(perfect["box/scale"]) == pytest.approx(0.0, abs=1e-6)
    assert float(perfect["box/offset"]) == pytest.approx(0.0, abs=1e-6)
    scale[0, row, col] += 1.0  # 2 units of L1, times the default weight 0.1
    off = centernet_loss({"object_center": [logits, logits], "box/scale": [scale, scale], "box/offset": offset}, batch)
    assert float(off["box/scale"]) == pytest.approx(0.2, rel=1e-5)
    assert float(off["total"]) == pytest.approx(float(off["object_center"] + off["box/scale"] + off["box/offset"]))
    _, cn = model_config(load(CONFIGS / "centernet_mobilenetv2fpn_512x512_coco17_od" / "pipeline.config"))
    w = LossWeights.from_config(cn)
    assert (w.scale, w.offset, w.object_center, w.alpha, w.beta, w.min_box_overlap_iou) == (0.1, 1.0, 1.0, 2.0, 4.0, 0.7)


# ----------------------------------------------------------------------------- augmentation
def _sample() -> Sample:
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:25] = 255
    boxes = np.array([[10 / 40, 5 / 60, 20 / 40, 25 / 60]], np.float32)
    kps = np.array([[[0.3, 0.1], [0.3, 0.4]]], np.float32)
    return Sample(image, boxes, np.array([0]), kps, np.array([[True, True]]))


def test_horizontal_flip_mirrors_boxes_and_permutes_keypoints():
    s = _sample()
    f = horizontal_flip(s, permutation=[1, 0])
    np.testing.assert_allclose(f.boxes[0], [10 / 40, 1 - 25 / 60, 20 / 40, 1 - 5 / 60], atol=1e-6)
    _, xs = np.nonzero(f.image[..., 0])
    assert xs.min() == 60 - 25 and xs.max() == 60 - 5 - 1
    # left keypoint (x=0.1) becomes the right one after the swap
    np.testing.assert_allclose(f.keypoints[0], [[0.3, 0.6], [0.3, 0.9]], atol=1e-6)
    twice = horizontal_flip(f, permutation=[1, 0])
    np.testing.assert_array_equal(twice.image, s.image)
    np.testing.assert_allclose(twice.keypoints, s.keypoints, atol=1e-6)


def test_crop_moves_boxes_with_pixels_and_drops_outside_centres():
    s = _sample()
    c = crop(s, (0.0, 0.0, 0.75, 0.5))  # 30 x 30 pixels
    assert c.image.shape == (30, 30, 3)
    ys, xs = np.nonzero(c.image[..., 0])
    y0, x0, y1, x1 = c.boxes[0] * np.array([30, 30, 30, 30])
    assert (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1) == pytest.approx((y0, x0, y1, x1), abs=1e-4)
    gone = crop(s, (0.6, 0.6, 1.0, 1.0))
    assert len(gone.boxes) == 0 and gone.keypoints.shape == (0, 2, 2)
    zoom = crop(s, (-0.5, -0.5, 1.0, 1.0))  # zoom out: padding on top/left
    assert zoom.image.shape == (60, 90, 3) and zoom.image[:20].max() == 0
    np.testing.assert_allclose(zoom.boxes[0] * [60, 90, 60, 90], [30, 35, 40, 55], atol=1e-4)


def test_augment_is_deterministic_and_keeps_boxes_valid():
    s = _sample()
    a = augment(s, np.random.default_rng(7))
    b = augment(s, np.random.default_rng(7))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    for seed in range(20):
        out = augment(s, np.random.default_rng(seed), AugmentConfig(crop_probability=1.0))
        assert out.image.dtype == np.uint8
        assert ((out.boxes >= 0) & (out.boxes <= 1)).all()
        assert (out.boxes[:, 2] >= out.boxes[:, 0]).all() and (out.boxes[:, 3] >= out.boxes[:, 1]).all()
    jittered = color_jitter(np.full((4, 4, 3), 128, np.uint8), np.random.default_rng(1))
    assert jittered.shape == (4, 4, 3) and jittered.dtype == np.uint8


# ----------------------------------------------------------------------------- input pipeline
def test_training_data_pipeline(tmp_path):
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.train.data import InputGeometry, TrainingData, resize_and_pad

    root = make_shapes_dataset(tmp_path / "shapes", 5, seed=3, image_size=(96, 128))
    ds = CocoDataset(root / "annotations.json", root / "images")
    data = TrainingData(ds, InputGeometry(64, 64), 3, seed=1)
    assert data.label_map() == {1: "circle", 2: "square", 3: "triangle"}
    plain = data.example(0, 0, augmented=False)
    n_objects = len(ds.annotations(ds.image_ids[0]))
    assert plain["weights"].sum() == n_objects
    assert plain["image"][48:].max() == 0  # 96x128 fitted into 64x64 -> 48x64, padded below
    assert np.count_nonzero(plain["heatmap"] == 1.0) == n_objects
    _, frac = resize_and_pad(np.zeros((96, 128, 3), np.uint8), InputGeometry(64, 64))
    assert frac == (0.75, 1.0)

    batches = [{k: v.numpy() for k, v in b.items()} for b in data.tf_dataset(2).take(3)]
    again = [{k: v.numpy() for k, v in b.items()} for b in data.tf_dataset(2).take(3)]
    assert batches[0]["image"].shape == (2, 64, 64, 3) and batches[0]["heatmap"].shape == (2, 16, 16, 3)
    for x, y in zip(batches, again):  # same seed -> same stream
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["indices"], y["indices"])
    with pytest.raises(Exception, match="num_classes"):
        TrainingData(ds, InputGeometry(64, 64), 2)


def test_keypoint_losses_vanish_for_perfect_predictions():
    import tensorflow as tf
    from zoo.train.losses import centernet_loss

    boxes = np.array([[0.2, 0.2, 0.6, 0.6]])
    kps = np.array([[[0.3, 0.3], [0.5, 0.55]]])
    t = center_targets(boxes, [0], (16, 16), 1, max_boxes=3, keypoints=kps)
    batch = {k: tf.constant(v[None]) for k, v in t.as_dict().items()}
    logits = np.where(t.heatmap[None] == 1.0, 9.0, -9.0).astype(np.float32)
    kp_logits = np.where(t.keypoint_heatmap[None] == 1.0, 9.0, -9.0).astype(np.float32)
    row, col = t.indices[0]
    scale = np.zeros((1, 16, 16, 2), np.float32)
    offset = np.zeros((1, 16, 16, 2), np.float32)
    scale[0, row, col], offset[0, row, col] = t.scale[0], t.offset[0]
    regression = np.zeros((1, 16, 16, 4), np.float32)
    regression[0, row, col] = t.keypoint_regression[0].reshape(-1)
    kp_offset = np.zeros((1, 16, 16, 4), np.float32)  # per keypoint type: channels 2k, 2k+1
    for k in range(2):
        r, c = t.keypoint_indices[0, k]
        kp_offset[0, r, c, 2 * k:2 * k + 2] = t.keypoint_offset[0, k]
    preds = {"object_center": logits, "box/scale": scale, "box/offset": offset, "keypoint/heatmap": kp_logits,
             "keypoint/regression": regression, "keypoint/offset": kp_offset}
    losses = centernet_loss(preds, batch)
    for key in ("keypoint/regression", "keypoint/offset", "box/scale", "box/offset"):
        assert float(losses[key]) == pytest.approx(0.0, abs=1e-6), key
    assert float(losses["keypoint/heatmap"]) < 0.01
    kp_offset[0, t.keypoint_indices[0, 1, 0], t.keypoint_indices[0, 1, 1], 2] += 0.5
    preds["keypoint/offset"] = kp_offset
    assert float(centernet_loss(preds, batch)["keypoint/offset"]) == pytest.approx(0.5 / 2, rel=1e-5)
