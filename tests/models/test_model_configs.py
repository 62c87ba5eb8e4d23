"""Configs the models do not implement are refused, naming the field; the registry and its seams."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import CONFIGS, ROOT
from zoo.errors import ConfigError, UnsupportedModelError
from zoo.models.anchors import anchor_generator_from_config, grid_anchor_generator_from_config
from zoo.models.builder import build_model
from zoo.models.preprocess import resizer_from_config
from zoo.pipeline_config import parse

SSD_V2 = "ssd_mobilenet_v2_320x320_coco17_tpu-8"


def _ssd_anchors(body: str):
    return anchor_generator_from_config(parse(f"ssd_anchor_generator {{ {body} }}"))


# ------------------------------------------------------------------ image resizers
@pytest.mark.parametrize("resizer", ["fixed_shape_resizer { height: 64 width: 64", "keep_aspect_ratio_resizer {"])
def test_grayscale_resizers_are_refused(resizer: str) -> None:
    with pytest.raises(ConfigError, match=r"convert_to_grayscale"):
        resizer_from_config(parse(f"{resizer} convert_to_grayscale: true }}"))


def test_padding_with_other_values_than_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"per_channel_pad_value \[0.5, 0.5, 0.5\]"):
        resizer_from_config(parse(
            "keep_aspect_ratio_resizer { min_dimension: 64 max_dimension: 64 pad_to_max_dimension: true "
            "per_channel_pad_value: [0.5, 0.5, 0.5] }"
        ))
    zero = resizer_from_config(parse(
        "keep_aspect_ratio_resizer { min_dimension: 64 max_dimension: 64 pad_to_max_dimension: true "
        "per_channel_pad_value: [0.0, 0.0, 0.0] }"
    ))
    assert zero.padded_shape == (64, 64)  # zero padding is what the resizer does


def test_a_refused_resizer_stops_the_whole_build() -> None:
    text = (CONFIGS / SSD_V2 / "pipeline.config").read_text()
    edited = text.replace("fixed_shape_resizer {", "fixed_shape_resizer {\n        convert_to_grayscale: true", 1)
    assert edited != text
    with pytest.raises(ConfigError, match="convert_to_grayscale"):
        build_model(parse(edited))


# ------------------------------------------------------------------ anchor generators
def test_per_layer_strides_must_cover_every_layer() -> None:
    with pytest.raises(ConfigError, match=r"height_stride and .width_stride need one value per layer: "
                                          r"num_layers is 2, got 1 and 1"):
        _ssd_anchors("num_layers: 2 aspect_ratios: 1.0 height_stride: 16 width_stride: 16")
    with pytest.raises(ConfigError, match=r"got 2 and 1"):
        _ssd_anchors("num_layers: 2 aspect_ratios: 1.0 height_stride: [16, 32] width_stride: 16")
    with pytest.raises(ConfigError, match=r"height_offset and .width_offset"):
        _ssd_anchors("num_layers: 2 aspect_ratios: 1.0 height_offset: [8, 8, 8] width_offset: [8, 8, 8]")
    anchors = _ssd_anchors("num_layers: 2 aspect_ratios: 1.0 height_stride: [16, 32] width_stride: [16, 32]")
    assert anchors.anchor_strides == [(16.0, 16.0), (32.0, 32.0)]


def test_explicit_scales_must_cover_every_layer() -> None:
    with pytest.raises(ConfigError, match=r"scales needs one value per layer: num_layers is 3, got 2"):
        _ssd_anchors("num_layers: 3 aspect_ratios: 1.0 scales: [0.1, 0.5]")
    assert len(_ssd_anchors("num_layers: 2 aspect_ratios: 1.0 scales: [0.1, 0.5]").box_specs) == 2


@pytest.mark.parametrize("config, field", [
    ("ssd_anchor_generator { num_layers: 2 }", "ssd_anchor_generator.aspect_ratios"),
    ("multiscale_anchor_generator { min_level: 3 max_level: 4 }", "multiscale_anchor_generator.aspect_ratios"),
    ("multiscale_anchor_generator { aspect_ratios: [] }", "multiscale_anchor_generator.aspect_ratios"),
])
def test_anchor_generators_without_aspect_ratios_are_refused(config: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field} is empty"):
        anchor_generator_from_config(parse(config))


@pytest.mark.parametrize("config, field", [
    ("grid_anchor_generator { aspect_ratios: 1.0 }", "scales"),
    ("grid_anchor_generator { scales: [0.5, 1.0] }", "aspect_ratios"),
])
def test_grid_anchors_need_scales_and_aspect_ratios(config: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"grid_anchor_generator.{field} is empty"):
        grid_anchor_generator_from_config(parse(config))
    anchors = grid_anchor_generator_from_config(parse("grid_anchor_generator { scales: [0.5, 1.0] aspect_ratios: 2.0 }"))
    assert anchors.num_anchors_per_location() == 2


# ------------------------------------------------------------------ registry
def test_importing_the_model_registry_does_not_import_tensorflow() -> None:
    code = ("import sys, zoo, zoo.models, zoo.models.builder, zoo.models.registry, zoo.models.protocols; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TensorFlow'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_meta_architecture_has_its_extractors() -> None:
    from zoo.models import registry

    assert registry.meta_architectures() == ["center_net", "faster_rcnn", "ssd"]
    assert "resnet_v1_50_fpn" in registry.feature_extractors("center_net")
    assert "ssd_mobilenet_v2_fpn_keras" in registry.feature_extractors("ssd")
    assert "faster_rcnn_resnet50_keras" in registry.feature_extractors("faster_rcnn")
    # a type is looked up under its own meta-architecture only
    with pytest.raises(UnsupportedModelError, match="SSD feature extractor 'mobilenet_v2_fpn'.*saved_model"):
        registry.feature_extractor("ssd", "mobilenet_v2_fpn")
    with pytest.raises(ValueError, match="unknown meta-architecture 'yolo'"):
        registry.register_feature_extractor("x", meta="yolo")


def test_unknown_meta_architecture_points_at_the_saved_model_backend() -> None:
    with pytest.raises(UnsupportedModelError, match="'yolo'.*backend='saved_model'"):
        build_model(parse("model { yolo { num_classes: 3 } }"))
