"""Hourglass-104, ResNet V2 and MobileNetV2-FPN backbones: checkpoint layout, preprocessing, config fields.

Cheap checks (no checkpoint values, small inputs). Fidelity against the original's outputs is in
``test_backbones_fidelity.py``.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.conftest import CONFIGS, MANIFESTS
from zoo.checkpoint import VALUE_SUFFIX, match_variables
from zoo.errors import ConfigError
from zoo.models.centernet import get_backbone
from zoo.pipeline_config import load, parse

_PREFIX = "model/_feature_extractor/"

# feature_extractor type -> a zoo model whose manifest records that extractor's checkpoint keys.
_MANIFEST_FOR = {
    "hourglass_104": "centernet_hg104_512x512_coco17_tpu-8",
    "resnet_v2_50": "centernet_resnet50_v2_512x512_coco17_tpu-8",
    "mobilenet_v2_fpn_sep_conv": "centernet_mobilenetv2fpn_512x512_coco17_od",
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[object, keras.Model]]:
    """Each backbone type built once from its zoo config: type -> (backbone, model)."""
    out = {}
    for kind, name in _MANIFEST_FOR.items():
        cfg = load(CONFIGS / name / "pipeline.config")
        backbone = get_backbone(cfg.get("model.center_net.feature_extractor"))
        out[kind] = (backbone, backbone.build())
    return out


def _manifest_shapes(name: str) -> dict[str, tuple[int, ...]]:
    data = json.loads((MANIFESTS / f"{name}.json").read_text())
    return {
        key[len(_PREFIX):]: tuple(shape)
        for key, shape, _ in data["variables"]
        if key.startswith(_PREFIX)
    }


@pytest.mark.parametrize("kind", sorted(_MANIFEST_FOR))
def test_checkpoint_map_consumes_every_manifest_key(kind, built):
    backbone, model = built[kind]
    mapping = backbone.checkpoint_map(model)
    shapes = _manifest_shapes(_MANIFEST_FOR[kind])
    report, plan = match_variables(mapping, shapes, model_variables=model.weights)
    assert report.ok, report.summary()
    assert len(plan) == len(shapes) == len(model.weights)
    assert all(not key.endswith(VALUE_SUFFIX) for key in mapping)


@pytest.mark.parametrize("kind", sorted(_MANIFEST_FOR))
def test_same_extractor_in_every_variant(kind):
    """All zoo variants of one extractor (512/1024, with keypoints) share the same backbone keys."""
    reference = _manifest_shapes(_MANIFEST_FOR[kind])
    variants = [
        p.stem for p in MANIFESTS.glob("centernet_*.json")
        if load(CONFIGS / p.stem / "pipeline.config").get("model.center_net.feature_extractor.type") == kind
    ]
    assert len(variants) >= 2
    for name in variants:
        assert _manifest_shapes(name) == reference, name


def test_map_names_the_original_layers(built):
    hg, hg_model = built["hourglass_104"]
    hg_map = hg.checkpoint_map(hg_model)
    stem = hg_map["_network/downsample_input/conv_block/conv/kernel"]
    assert tuple(stem.shape) == (7, 7, 3, 128)
    assert tuple(hg_map["_network/hourglass_network/1/inner_block/0/inner_block/0/inner_block/0/inner_block/0"
                        "/inner_block/3/conv/kernel"].shape) == (3, 3, 512, 512)

    rn, rn_model = built["resnet_v2_50"]
    rn_map = rn.checkpoint_map(rn_model)
    assert tuple(rn_map["_base_model/layer_with_weights-0/bias"].shape) == (64,)
    assert rn_map["_base_model/layer_with_weights-101/gamma"].path.endswith("post_bn/gamma")
    assert tuple(rn_map["_feature_extractor_model/layer_with_weights-3/kernel"].shape) == (3, 3, 256, 256)

    mb, mb_model = built["mobilenet_v2_fpn_sep_conv"]
    mb_map = mb.checkpoint_map(mb_model)
    assert tuple(mb_map["_base_model/layer_with_weights-2/depthwise_kernel"].shape) == (3, 3, 32, 1)
    assert tuple(mb_map["_feature_extractor_model/layer_with_weights-3/pointwise_kernel"].shape) == (1, 1, 64, 32)


def test_outputs_are_stride_four(built):
    x = np.zeros((1, 128, 128, 3), np.float32)
    hg_out = built["hourglass_104"][1](x)
    assert [tuple(t.shape) for t in hg_out] == [(1, 32, 32, 256)] * 2
    for kind, channels in (("resnet_v2_50", 64), ("mobilenet_v2_fpn_sep_conv", 24)):
        out = built[kind][1](np.zeros((1, 96, 64, 3), np.float32))
        out = out[0] if isinstance(out, (list, tuple)) else out
        assert tuple(out.shape) == (1, 24, 16, channels), kind


def test_preprocess_follows_config_and_extractor():
    rng = np.random.RandomState(0)
    images = rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)

    hg = get_backbone(parse('type: "hourglass_104" bgr_ordering: true channel_means: [1.0, 2.0, 3.0] '
                            'channel_stds: [2.0, 4.0, 8.0]'))
    want = (images[..., ::-1] - np.array([1, 2, 3], np.float32)) / np.array([2, 4, 8], np.float32)
    np.testing.assert_allclose(np.asarray(hg.preprocess(images)), want, rtol=1e-6)

    plain = get_backbone("hourglass_104")
    np.testing.assert_allclose(np.asarray(plain.preprocess(images)), images, rtol=1e-6)

    for kind in ("resnet_v2_50", "resnet_v2_101", "mobilenet_v2_fpn", "mobilenet_v2_fpn_sep_conv"):
        got = np.asarray(get_backbone(kind).preprocess(images))
        np.testing.assert_allclose(got, images / 127.5 - 1.0, rtol=1e-5, atol=1e-6, err_msg=kind)
    rgb_means = get_backbone(parse('type: "resnet_v2_50" channel_means: [10.0, 20.0, 30.0]'))
    np.testing.assert_allclose(np.asarray(rgb_means.preprocess(images)),
                               (images - np.array([10, 20, 30], np.float32)) / 127.5 - 1.0, rtol=1e-5, atol=1e-6)


def test_resnet_v2_101_builds_with_complete_map():
    backbone = get_backbone("resnet_v2_101")
    model = backbone.build()
    mapping = backbone.checkpoint_map(model)
    assert {id(v) for v in mapping.values()} == {id(w) for w in model.weights}
    assert len(mapping) == len(model.weights)
    out = model(np.zeros((1, 64, 64, 3), np.float32))
    out = out[0] if isinstance(out, (list, tuple)) else out
    assert tuple(out.shape) == (1, 16, 16, 64)


def _fpn_conv_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.name.startswith("fpn_conv") and layer.weights
            and not isinstance(layer, keras.layers.BatchNormalization)]


def test_mobilenet_fpn_honours_extractor_fields():
    small = get_backbone(parse('type: "mobilenet_v2_fpn_sep_conv" depth_multiplier: 0.35 '
                               'upsampling_interpolation: "bilinear"'))
    model = small.build()
    base = model.get_layer("base_model")
    assert tuple(base.get_layer("Conv1").kernel.shape) == (3, 3, 3, 16)
    # The detection variant scales the final 1x1 conv with the multiplier too (1280 * 0.35 = 448).
    assert tuple(base.get_layer("Conv_1").kernel.shape) == (1, 1, 112, 448)
    assert all(isinstance(layer, keras.layers.SeparableConv2D) for layer in _fpn_conv_layers(model))
    assert {layer.interpolation for layer in model.layers if isinstance(layer, keras.layers.UpSampling2D)} == {
        "bilinear"
    }
    assert len(small.checkpoint_map(model)) == len(model.weights)

    dense = get_backbone(parse('type: "mobilenet_v2_fpn"')).build()
    convs = _fpn_conv_layers(dense)
    assert len(convs) == 3 and not any(isinstance(layer, keras.layers.SeparableConv2D) for layer in convs)
    assert {layer.interpolation for layer in dense.layers if isinstance(layer, keras.layers.UpSampling2D)} == {
        "nearest"
    }
    separable = get_backbone(parse('type: "mobilenet_v2_fpn" use_separable_conv: true')).build()
    assert all(isinstance(layer, keras.layers.SeparableConv2D) for layer in _fpn_conv_layers(separable))


_SMALL_DEMO_CONFIG = """
model {
  center_net {
    num_classes: 3
    feature_extractor {
      type: "mobilenet_v2_fpn_sep_conv"
      depth_multiplier: 0.35
      use_separable_conv: true
    }
    image_resizer { fixed_shape_resizer { height: 256 width: 256 } }
    use_depthwise: true
    object_detection_task { task_loss_weight: 1.0 offset_loss_weight: 1.0 scale_loss_weight: 0.1 }
    object_center_params { object_center_loss_weight: 1.0 max_box_predictions: 20 }
  }
}
train_config { batch_size: 2 }
eval_config { }
"""


def test_small_mobilenet_variant_builds_and_runs_through_the_builder():
    from zoo.models.builder import build_model

    model = build_model(parse(_SMALL_DEMO_CONFIG))
    images = np.random.RandomState(1).uniform(0, 255, (2, 200, 300, 3)).astype(np.float32)
    preprocessed, true_shapes = model.preprocess(images)
    assert tuple(preprocessed.shape) == (2, 256, 256, 3)
    predictions = model.predict(preprocessed)
    assert tuple(predictions["object_center"][0].shape) == (2, 64, 64, 3)
    assert tuple(predictions["box/scale"][0].shape) == (2, 64, 64, 2)
    detections = model.postprocess(predictions, true_shapes)
    assert tuple(detections["detection_boxes"].shape) == (2, 20, 4)
    assert np.all(np.isfinite(np.asarray(detections["detection_scores"])))
    assert model.keras_model.count_params() < 1_500_000


@pytest.mark.parametrize(
    "text, message",
    [
        ('type: "hourglass_104" channel_means: [1.0, 2.0]', "channel_means must list 3 values"),
        ('type: "resnet_v2_50" channel_stds: [1.0, 0.0, 1.0]', "channel_stds must be non-zero"),
        ('type: "mobilenet_v2_fpn" depth_multiplier: 0', "depth_multiplier must be positive"),
        ('type: "mobilenet_v2_fpn" upsampling_interpolation: "bicubic"', "upsampling_interpolation"),
    ],
)
def test_bad_extractor_fields_are_config_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        get_backbone(parse(text))


@pytest.mark.parametrize("kind, channels", [("hourglass_10", 64), ("hourglass_52", 128)])
def test_single_stack_hourglasses(kind, channels):
    backbone = get_backbone(kind)
    model = backbone.build()
    out = model(np.zeros((1, 128, 128, 3), np.float32))
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    assert [tuple(t.shape) for t in out] == [(1, 32, 32, channels)]
    mapping = backbone.checkpoint_map(model)
    assert len(mapping) == len(model.weights)
    assert "_network/intermediate_conv1/0/conv/kernel" not in mapping
    assert tuple(mapping["_network/output_conv/0/conv/kernel"].shape) == (3, 3, channels, channels)
