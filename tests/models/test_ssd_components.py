"""SSD building blocks against the original's recorded outputs: anchors, box coder, per-class NMS."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS, FIXTURES
from zoo.errors import ConfigError, UnsupportedModelError
from zoo.models.anchors import MultiscaleGridAnchors, SsdAnchors, anchor_generator_from_config
from zoo.models.box_coders import FasterRcnnBoxCoder, box_coder_from_config
from zoo.models.nms import NmsConfig, batch_multiclass_nms, nms_config_from_config
from zoo.pipeline_config import load, model_config, parse

FPNLITE = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
SSD_MODELS = sorted(p.name for p in CONFIGS.iterdir() if p.name.startswith(("ssd_", "efficientdet_")))


def _reference(name: str) -> np.lib.npyio.NpzFile:
    return np.load(FIXTURES / name / "reference.npz")


def _ssd_msg(name: str):
    arch, msg = model_config(load(CONFIGS / name / "pipeline.config"))
    assert arch == "ssd"
    return msg


@pytest.fixture(scope="module")
def fpnlite() -> dict[str, np.ndarray]:
    ref = _reference(FPNLITE)
    return {k: ref[k] for k in ref.files}


def test_every_ssd_model_is_covered() -> None:
    assert len(SSD_MODELS) == 18  # 10 SSD + 8 EfficientDet configs of the zoo


@pytest.mark.parametrize("name", SSD_MODELS)
def test_anchors_match_the_original_for_every_ssd_model(name: str) -> None:
    """Bit-for-bit anchors, including the offset quirk on levels whose stride does not divide the image."""
    meta = json.loads((FIXTURES / name / "meta.json").read_text())
    keys = meta["predict_keys"]
    shapes = [tuple(keys[f"feature_maps_{i}"][0][1:3]) for i in range(8) if f"feature_maps_{i}" in keys]
    height, width = meta["preprocessed_inputs_shape"][1:3]
    generator = anchor_generator_from_config(_ssd_msg(name)["anchor_generator"])
    anchors = generator.generate(shapes, height, width).numpy()
    ref = _reference(name)
    if "predict/anchors" in ref.files:
        np.testing.assert_array_equal(anchors, ref["predict/anchors"])
    else:
        assert tuple(ref["predict/anchors__shape"]) == anchors.shape
        np.testing.assert_array_equal(anchors.ravel()[ref["predict/anchors__sample_idx"]], ref["predict/anchors__sample_val"])
        assert anchors.astype(np.float64).sum() == pytest.approx(float(ref["predict/anchors__sum"]), rel=1e-6)


def test_multiscale_offset_quirk_and_order() -> None:
    gen = MultiscaleGridAnchors(min_level=7, max_level=7, anchor_scale=4.0, aspect_ratios=[1.0, 2.0], scales_per_octave=2)
    # 320 is not a multiple of 128: no half-stride offset; 256 is: offset 64.
    a320 = gen.generate([(3, 3)], 320, 320).numpy() * 320
    a256 = gen.generate([(2, 2)], 256, 256).numpy() * 256
    assert a320.shape == (3 * 3 * 4, 4)
    np.testing.assert_allclose((a320[0, 0] + a320[0, 2]) / 2, 0.0, atol=1e-4)
    np.testing.assert_allclose((a256[0, 0] + a256[0, 2]) / 2, 64.0, atol=1e-4)
    # within a location: aspect-ratio major, scale minor; aspect 2 is wider than tall
    h = a256[:4, 2] - a256[:4, 0]
    w = a256[:4, 3] - a256[:4, 1]
    np.testing.assert_allclose(h[:2], [512.0, 512.0 * 2**0.5], rtol=1e-5)
    np.testing.assert_allclose(w[2] / h[2], 2.0, rtol=1e-5)
    # dynamic sizes always use the half-stride offset
    dyn = gen.generate([(3, 3)], tf.constant(320), tf.constant(320)).numpy() * 320
    np.testing.assert_allclose((dyn[0, 0] + dyn[0, 2]) / 2, 64.0, atol=1e-3)


def test_ssd_anchor_generator_counts() -> None:
    gen = SsdAnchors(num_layers=6, aspect_ratios=[1.0, 2.0, 0.5, 3.0, 1 / 3])
    assert gen.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    shapes = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert gen.generate(shapes, 300, 300).shape == (1917, 4)


def test_anchor_config_errors() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        anchor_generator_from_config(parse("grid_anchor_generator { height: 256 }"))
    with pytest.raises(ConfigError, match="min_level"):
        MultiscaleGridAnchors(min_level=5, max_level=3)
    with pytest.raises(ConfigError, match="expect 5 feature maps"):
        MultiscaleGridAnchors().generate([(4, 4)], 128, 128)


def test_box_coder_round_trip_and_config() -> None:
    coder = box_coder_from_config(_ssd_msg(FPNLITE)["box_coder"])
    assert coder.scale_factors == (10.0, 10.0, 5.0, 5.0)
    anchors = tf.constant([[0.1, 0.2, 0.5, 0.4], [0.0, 0.0, 1.0, 1.0]])
    boxes = tf.constant([[0.15, 0.1, 0.45, 0.5], [0.2, 0.3, 0.9, 0.6]])
    codes = coder.encode(boxes, anchors)
    np.testing.assert_allclose(codes.numpy()[1], [10 * 0.05, 10 * -0.05, 5 * np.log(0.7), 5 * np.log(0.3)], rtol=1e-5)
    np.testing.assert_allclose(coder.decode(codes, anchors).numpy(), boxes.numpy(), atol=1e-6)
    with pytest.raises(ConfigError, match="not supported"):
        box_coder_from_config(parse("mean_stddev_box_coder { stddev: 0.1 }"))
    with pytest.raises(ConfigError, match="positive"):
        FasterRcnnBoxCoder((10.0, 0.0, 5.0, 5.0))


def test_box_decoding_reproduces_the_original(fpnlite: dict[str, np.ndarray]) -> None:
    decoded = FasterRcnnBoxCoder().decode(fpnlite["predict/box_encodings"], fpnlite["predict/anchors"][None])
    np.testing.assert_allclose(decoded.numpy(), fpnlite["postprocess/raw_detection_boxes"], rtol=1e-5, atol=1e-6)


def test_nms_reproduces_the_original_on_its_raw_outputs(fpnlite: dict[str, np.ndarray]) -> None:
    """The original's raw boxes and scores through our NMS give its 100 detections exactly."""
    config = nms_config_from_config(_ssd_msg(FPNLITE)["post_processing"]["batch_non_max_suppression"])
    assert (config.iou_thresh, config.max_total_size, config.change_coordinate_frame) == (pytest.approx(0.6), 100, True)
    scores = fpnlite["postprocess/raw_detection_scores"]
    n = scores.shape[1]
    extra = {"multiclass_scores": scores, "anchor_indices": np.arange(n, dtype=np.float32)[None]}
    boxes, det_scores, classes, fields, num = batch_multiclass_nms(
        fpnlite["postprocess/raw_detection_boxes"], scores[:, :, 1:], config, tf.constant([0.0, 0.0, 1.0, 1.0]), extra
    )
    assert num.numpy().tolist() == [100]
    np.testing.assert_array_equal(classes.numpy(), fpnlite["postprocess/detection_classes"])
    np.testing.assert_array_equal(fields["anchor_indices"].numpy().astype(np.int32), fpnlite["postprocess/detection_anchor_indices"])
    np.testing.assert_allclose(det_scores.numpy(), fpnlite["postprocess/detection_scores"], rtol=1e-6)
    np.testing.assert_allclose(boxes.numpy(), fpnlite["postprocess/detection_boxes"], atol=1e-6)
    np.testing.assert_allclose(fields["multiclass_scores"].numpy(), fpnlite["postprocess/detection_multiclass_scores"], rtol=1e-6)


def _run_nms(boxes, scores, window=(0.0, 0.0, 1.0, 1.0), **kw):
    config = NmsConfig(**{"score_thresh": 0.0, "iou_thresh": 0.5, "max_size_per_class": 10, "max_total_size": 4, **kw})
    out = batch_multiclass_nms(
        np.asarray([boxes], np.float32), np.asarray([scores], np.float32), config, tf.constant(window, tf.float32)
    )
    return [t.numpy()[0] for t in out[:3]] + [int(out[4].numpy()[0])]


def test_nms_per_class_suppression_sorting_and_padding() -> None:
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.55], [0.6, 0.6, 1.0, 1.0]]
    scores = [[0.9, 0.1], [0.8, 0.7], [0.0, 0.3]]
    b, s, c, num = _run_nms(boxes, scores)
    # class 0: box 1 overlaps box 0 (IoU 0.91) and is suppressed; box 2 scores 0 (not above the threshold)
    # class 1: boxes 1 and 2 kept, box 0 (0.1) suppressed by box 1
    assert num == 3
    np.testing.assert_allclose(s, [0.9, 0.7, 0.3, 0.0])
    np.testing.assert_array_equal(c, [0, 1, 1, 0])
    np.testing.assert_allclose(b[:3], np.asarray(boxes)[[0, 1, 2]])
    np.testing.assert_array_equal(b[3], [0, 0, 0, 0])  # zero padding past num_detections


def test_nms_clips_prunes_and_changes_frame() -> None:
    boxes = [[0.1, 0.1, 0.4, 0.4], [0.8, 0.2, 0.95, 0.3], [0.6, 0.5, 0.9, 0.7]]
    scores = [[0.5], [0.9], [0.7]]
    # window = upper half: box 1 lies outside (pruned), box 2 is clipped to y <= 0.75
    b, s, c, num = _run_nms(boxes, scores, window=(0.0, 0.0, 0.75, 1.0), change_coordinate_frame=False)
    assert num == 2
    np.testing.assert_allclose(s[:2], [0.7, 0.5])
    np.testing.assert_allclose(b[0], [0.6, 0.5, 0.75, 0.7], atol=1e-6)
    b, s, c, num = _run_nms(boxes, scores, window=(0.0, 0.0, 0.75, 1.0), change_coordinate_frame=True)
    np.testing.assert_allclose(b[0], [0.8, 0.5, 1.0, 0.7], atol=1e-6)
    np.testing.assert_allclose(b[1], [0.1 / 0.75, 0.1, 0.4 / 0.75, 0.4], atol=1e-6)


def test_nms_caps_total_and_thresholds_scores() -> None:
    boxes = [[i / 10, 0.0, i / 10 + 0.05, 0.05] for i in range(8)]
    scores = [[0.1 * (i + 1)] for i in range(8)]
    b, s, c, num = _run_nms(boxes, scores, max_total_size=4)
    assert num == 4
    np.testing.assert_allclose(s, [0.8, 0.7, 0.6, 0.5], rtol=1e-6)
    b, s, c, num = _run_nms(boxes, scores, score_thresh=0.65, max_total_size=4)
    assert num == 2 and s[2] == 0.0


def test_nms_config_errors() -> None:
    with pytest.raises(ConfigError, match="iou_threshold"):
        NmsConfig(iou_thresh=1.5)
    with pytest.raises(ConfigError, match="use_class_agnostic_nms"):
        nms_config_from_config(parse("use_class_agnostic_nms: true"))
    with pytest.raises(ConfigError, match="soft"):
        nms_config_from_config(parse("soft_nms_sigma: 0.5"))


def test_unsupported_ssd_parts_are_reported() -> None:
    from zoo.models.ssd import build_ssd
    from zoo.pipeline_config import parse

    text = (CONFIGS / "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8" / "pipeline.config").read_text()
    text = text.replace("'ssd_resnet50_v1_fpn_keras'", "'ssd_inception_v2_keras'")
    _, msg = model_config(parse(text))
    with pytest.raises(UnsupportedModelError, match="ssd_inception_v2_keras.*saved_model"):
        build_ssd(msg)
