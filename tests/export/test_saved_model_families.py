"""A SavedModel export of every meta-architecture family runs behind ``detect()`` and gives the
Keras model's detections (the SSD and CenterNet stand-in archives are covered in test_formats)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import zoo
from tests.references import reference_image, small_zoo_folder
from zoo.exporting import measure_agreement
from zoo.loading import load

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["efficientdet_d0_coco17_tpu-32", "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8"])
def test_saved_model_export_of_each_family_at_parity(name: str, tmp_path: Path) -> None:
    det = load(small_zoo_folder(name, tmp_path / "model", 256))
    result = zoo.export(det, "saved_model", out=tmp_path / "exported")
    exported = zoo.load(result.folder, backend="saved_model")
    image = reference_image()[0]
    agreement = measure_agreement(det, exported, [image])
    assert agreement["compared"] > 0 and agreement["parity"], sorted(agreement.items())
    found, expected = exported.detect(image), det.detect(image)
    np.testing.assert_array_equal(found.classes, expected.classes)
    assert found.labels == expected.labels
