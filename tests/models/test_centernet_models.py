"""CenterNet fidelity: every zoo CenterNet checkpoint maps strictly onto our Keras model, and our
model reproduces the original implementation's outputs (preprocess, every head, postprocess)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS, MANIFESTS
from tests.references import load_reference, reference_error, reference_image
from zoo.checkpoint import match_variables, restore
from zoo.errors import UnsupportedModelError
from zoo.models.builder import build_model
from zoo.models.centernet import centernet_config
from zoo.models.registry import feature_extractors
from zoo.pipeline_config import load, model_config

CENTERNET = sorted(p.stem for p in MANIFESTS.glob("centernet_*.json"))
# Models whose reference we reproduce here (each: one checkpoint write, one forward pass); the
# MobileNetV2 detector is compared with its SavedModel in tests/detect/test_backends.py.
REFERENCE_MODELS = [
    "centernet_resnet50_v1_fpn_512x512_coco17_tpu-8",
    "centernet_resnet101_v1_fpn_512x512_coco17_tpu-8",
    "centernet_resnet50_v1_fpn_512x512_kpts_coco17_tpu-8",
    "centernet_mobilenetv2fpn_512x512_coco17_kpts",
]
REL_TOL = 1e-4


def _manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def _variables_groups() -> list[list[str]]:
    """Manifests grouped by identical variable lists (e.g. 512 and 1024 configs of one network)."""
    groups: dict[str, list[str]] = {}
    for name in CENTERNET:
        extractor = model_config(load(CONFIGS / name / "pipeline.config"))[1].get("feature_extractor.type")
        digest = hashlib.sha256(json.dumps([extractor, _manifest(name)["variables"]]).encode()).hexdigest()
        groups.setdefault(digest, []).append(name)
    return list(groups.values())


GROUPS = _variables_groups()


def test_all_eleven_centernet_manifests_are_covered() -> None:
    assert len(CENTERNET) == 11
    assert sorted(n for g in GROUPS for n in g) == CENTERNET


@pytest.mark.parametrize("names", GROUPS, ids=lambda g: "+".join(n.replace("centernet_", "") for n in g))
def test_checkpoint_layout_matches_manifest_strictly(names: list[str]) -> None:
    """Every manifest key consumed, every model variable assigned, shapes equal (no values needed)."""
    name = names[0]
    cfg = load(CONFIGS / name / "pipeline.config")
    extractor = model_config(cfg)[1].get("feature_extractor.type")
    if extractor not in feature_extractors("center_net"):
        with pytest.raises(UnsupportedModelError, match="saved_model"):
            build_model(cfg)
        return
    net = build_model(cfg)
    shapes = {key: shape for key, shape, _ in _manifest(name)["variables"]}
    report, plan = match_variables(net.checkpoint_map(), shapes, model_variables=net.keras_model.weights)
    assert report.ok, report.summary()
    assert len(plan) == len(net.keras_model.weights) == len(shapes) - len(report.ignored)
    for other in names[1:]:  # configs sharing the variable list must describe the same heads
        other_msg = model_config(load(CONFIGS / other / "pipeline.config"))[1]
        assert centernet_config(other_msg).heads == net.config.heads


# ------------------------------------------------------------------ reference outputs
def _compare(ref: dict[str, np.ndarray], key: str, mine: np.ndarray) -> None:
    """Like :func:`~tests.references.check_reference`, with integer arrays compared exactly, full ones
    also accepted within 1e-6 absolute, and sampled ones' sum of squares within the tolerance."""
    mine = np.asarray(mine)
    assert key in ref or key + "__sample_idx" in ref, f"{key} missing from the reference"
    if key in ref and ref[key].dtype.kind in "iu":
        np.testing.assert_array_equal(mine, ref[key], err_msg=key)
        return
    err = reference_error(ref, key, mine)
    if key in ref:
        assert err <= REL_TOL or np.allclose(mine, ref[key], atol=1e-6), f"{key}: relative L2 error {err:.2e}"
        return
    assert err <= REL_TOL, f"{key}: sampled relative L2 error {err:.2e}"
    full = mine.astype(np.float64)
    sumsq = float(ref[key + "__sumsq"])
    assert abs(float((full**2).sum()) - sumsq) <= REL_TOL * sumsq, f"{key}: sum of squares"
    # Sums of zero-mean maps are cancellation noise: compare against the array's L2 scale.
    assert abs(float(full.sum()) - float(ref[key + "__sum"])) <= REL_TOL * np.sqrt(full.size * sumsq), f"{key}: sum"


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_reproduces_reference_outputs(name: str, reference_checkpoints) -> None:
    net = build_model(CONFIGS / name / "pipeline.config")
    report = restore(net.checkpoint_map(), reference_checkpoints(name), model_variables=net.keras_model.weights)
    assert report.ok and len(report.matched) == len(net.keras_model.weights)

    ref = load_reference(name)
    image = ref["input_image"] if "input_image" in ref else reference_image()
    preprocessed, true_shapes = net.preprocess(tf.constant(image))
    predictions = net.predict(preprocessed)
    post = net.postprocess(predictions, true_shapes)

    _compare(ref, "preprocessed_inputs", preprocessed.numpy())
    np.testing.assert_array_equal(true_shapes.numpy(), ref["true_image_shapes"])
    compared = 0
    for head, outputs in predictions.items():
        for i, tensor in enumerate(outputs):
            _compare(ref, f"predict/{head}_{i}", tensor.numpy())
            compared += 1
    heads_in_ref = {k.split("__")[0] for k in ref if k.startswith("predict/")}
    heads_in_ref = {k for k in heads_in_ref if "extracted_features" not in k and "preprocessed" not in k}
    assert compared == len(heads_in_ref)
    for key, value in post.items():
        _compare(ref, f"postprocess/{key}", value.numpy())
    assert {f"postprocess/{k}" for k in post} == {k for k in ref if k.startswith("postprocess/")}
    if "predict/extracted_features_0" in ref:
        features = net.backbone_model(preprocessed)
        features = features if isinstance(features, (list, tuple)) else [features]
        _compare(ref, "predict/extracted_features_0", features[0].numpy())


def test_padding_quirk_reproduced_zero_area_boxes_in_padding() -> None:
    """Centres in the zero padding are not masked (grid indices compared with pixel sizes)."""
    name = REFERENCE_MODELS[0]
    boxes = load_reference(name)["postprocess/detection_boxes_strided"][0]
    # The reference image is 384x512 inside a 512x512 pad: grid rows >= 96 lie in the padding.
    # The mask keeps every row below 384 (pixels), i.e. all 128 grid rows.
    from zoo.models.centernet import true_image_mask

    mask = true_image_mask(tf.zeros([1, 128, 128, 1]), tf.constant([[384, 512, 3]]))
    assert float(tf.reduce_min(mask)) == 1.0
    assert boxes.shape == (100, 4)
