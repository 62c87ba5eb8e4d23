"""The saved_model and hub backends reproduce the archives' SavedModel outputs; on identical weights
our Keras CenterNet agrees with the exported SavedModel."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.detections import Detections
from zoo.errors import ConfigError, UnsupportedModelError
from zoo.loading import load

TARBALLS = FIXTURES / "tarballs"
CENTERNET = "centernet_mobilenetv2fpn_512x512_coco17_od"
SSD = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backend_cache")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))


def _expected(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(TARBALLS / f"{name}.serving_outputs.npz"))


def _check_outputs(out: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 1e-4) -> None:
    for key in KEYS:
        np.testing.assert_allclose(out[key], expected[key], atol=atol, rtol=1e-4, err_msg=key)


def _check_detections(result: Detections, expected: dict[str, np.ndarray]) -> None:
    n = int(expected["num_detections"][0])
    assert isinstance(result, Detections) and len(result) == n
    np.testing.assert_array_equal(result.classes, expected["detection_classes"][0][:n].astype(np.int64))
    np.testing.assert_allclose(result.scores, expected["detection_scores"][0][:n], atol=1e-4)
    np.testing.assert_allclose(
        result.boxes_normalized, np.clip(expected["detection_boxes"][0][:n], 0, 1), atol=1e-4
    )


@pytest.mark.parametrize("name", [CENTERNET, SSD])
def test_saved_model_backend_reproduces_serving_outputs(name: str, cache: Path, image: np.ndarray) -> None:
    det = load(str(TARBALLS / f"{name}.tar.gz"), backend="saved_model", cache_dir=cache)
    assert det.backend == "saved_model" and det.model is None
    expected = _expected(name)
    _check_outputs(det.runner.infer(image[np.newaxis]), expected)
    _check_detections(det.detect(image), expected)
    # A batch is run one image at a time by exports that take [1, H, W, 3].
    results = det.detect(np.stack([image, image]))
    assert len(results) == 2
    np.testing.assert_allclose(results[1].scores, results[0].scores)


def test_hub_backend_with_local_handle(cache: Path, image: np.ndarray) -> None:
    name = CENTERNET
    from zoo.hub import fetch

    folder = fetch(str(TARBALLS / f"{name}.tar.gz"), cache_dir=cache)
    det = load(name, backend="hub", hub_handle=str(folder / "saved_model"))
    assert det.backend == "hub" and det.spec is not None and det.spec.name == name
    _check_detections(det.detect(image), _expected(name))


def test_hub_backend_without_handle_explains(cache: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="hub_handle"):
        load(CENTERNET, backend="hub")


@pytest.mark.parametrize("name", [CENTERNET, SSD])
def test_keras_backend_agrees_with_saved_model(name: str, cache: Path, image: np.ndarray) -> None:
    """Same weights, same image: our Keras model gives the exported SavedModel's detections."""
    det = load(str(TARBALLS / f"{name}.tar.gz"), backend="keras", cache_dir=cache)
    assert det.restore_report.ok and det.spec.name == name
    expected = _expected(name)
    out = det.runner.infer(image[np.newaxis])
    _check_outputs(out, expected, atol=1e-4)
    np.testing.assert_allclose(out["detection_multiclass_scores"], expected["detection_multiclass_scores"], atol=1e-4)
    _check_detections(det.detect(image), expected)
    assert det.runner.trace_count == 1


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="saved_model"):
        load(CENTERNET, backend="onnx")
