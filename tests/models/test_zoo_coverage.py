"""Every detector of the zoo has a Keras implementation whose variables match its checkpoint exactly.

For each of the 41 detectors: build the model from the archive's pipeline.config and match its
checkpoint map against the manifest of what the original implementation writes (every key, every
shape, every model variable mapped). The fidelity of the outputs is tested per family elsewhere.
"""
from __future__ import annotations

import gc
import json

import keras
import pytest

import zoo
from tests.conftest import CONFIGS, MANIFESTS
from zoo.checkpoint import match_variables
from zoo.models.builder import build_model
from zoo.pipeline_config import load

pytestmark = pytest.mark.slow

DETECTORS = [s.name for s in zoo.list_models(kind="detector") if s.url.startswith("http")]


def test_every_zoo_detector_is_covered():
    assert len(DETECTORS) == 41
    assert all((MANIFESTS / f"{name}.json").is_file() for name in DETECTORS)


@pytest.mark.parametrize("name", DETECTORS)
def test_model_variables_match_the_zoo_checkpoint(name):
    keras.backend.clear_session()
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    shapes = {key: shape for key, shape, _dtype in manifest["variables"]}
    net = build_model(load(CONFIGS / name / "pipeline.config"))
    report, plan = match_variables(net.checkpoint_map(), shapes, model_variables=net.keras_model.weights,
                                   checkpoint=name)
    assert report.ok, report.summary()
    assert len(plan) == len(shapes) - len(report.ignored) - len(report.optimizer)
    del net
    gc.collect()
