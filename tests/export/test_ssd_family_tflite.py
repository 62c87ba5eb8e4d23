"""TFLite exports of the SSD family beyond FPNLite: EfficientDet (D0) and RetinaNet (SSD ResNet50
FPN), built from their zoo configs at a reduced input size with the reference checkpoints (seed 0 +
the fixture overrides) and three classes (class head re-initialised), exported with NMS inside the
model and run behind ``detect()`` at parity with the Keras model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from tests.conftest import INPUT_IMAGE
from tests.references import small_zoo_folder
from zoo.exporting import measure_agreement
from zoo.loading import load

pytestmark = pytest.mark.slow

#: the smallest size every level (3 to 7) of these feature pyramids takes
INPUT_SIZE = 256


def _distinct_class_scores(net, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """Seeded class-head weights spread widely enough that no two detections tie on score (the
    re-initialised head scores every anchor almost alike, and tied scores have no defined order)."""
    rng = np.random.default_rng(seed)
    variables = net.checkpoint_map()
    for key in net.class_dependent_keys():
        variable = variables[key]
        variable.assign(rng.normal(0.0, 0.05, tuple(variable.shape)).astype(np.float32))


@pytest.mark.parametrize("name", ["efficientdet_d0_coco17_tpu-32", "ssd_resnet50_v1_fpn_640x640_coco17_tpu-8"])
def test_ssd_family_tflite_export_at_parity(name: str, tmp_path: Path) -> None:
    det = load(small_zoo_folder(name, tmp_path / "model", INPUT_SIZE), num_classes=3)
    _distinct_class_scores(det.net)
    assert det.net.resizer.padded_shape[:2] == (INPUT_SIZE, INPUT_SIZE)
    result = zoo.export(det, "tflite", out=tmp_path / "lite")
    lite = zoo.load(result.folder)
    assert lite.backend == "tflite"
    image = np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))
    agreement = measure_agreement(det, lite, [image])
    assert agreement["compared"] > 0 and agreement["parity"], sorted(agreement.items())
    found, expected = lite.detect(image, score_threshold=0.3), det.detect(image, score_threshold=0.3)
    assert len(expected) > 0 and sorted(found.labels) == sorted(expected.labels)
