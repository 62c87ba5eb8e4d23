"""The Keras internals odzoo reads are still there, and their absence fails loudly, never silently.

The keras backend's inference graph walks a functional model's ``_nodes_by_depth`` (and
``Sequential._functional``); fine-tuning lists nested layers with ``_flatten_layers``. pyproject pins
``keras<4``; when a Keras release changes these, these tests fail and the backend raises
:class:`KerasInternalsError` instead of quietly running the unoptimised model.
"""
from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest

from zoo.backends.inference_graph import KerasInternalsError, check_keras_internals, supports_folding
from zoo.backends.keras_backend import KerasBackend

ROOT = Path(__file__).resolve().parents[2]


def _functional() -> keras.Model:
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    inner = keras.Sequential([keras.Input((None, None, 4)), keras.layers.ReLU(6.0)])
    return keras.Model(inp, {"out": inner(x)})


def test_functional_graph_internals_have_the_shape_we_read() -> None:
    model = _functional()
    check_keras_internals(model)
    depths = model._nodes_by_depth
    assert isinstance(depths, dict) and all(isinstance(d, int) for d in depths)
    nodes = [node for level in depths.values() for node in level]
    ops = [node.operation for node in nodes if not node.is_input]
    assert any(isinstance(op, keras.layers.Conv2D) for op in ops)
    for node in nodes:
        assert isinstance(node.is_input, bool) and isinstance(node.outputs, list)
        assert isinstance(node.input_tensors, list)
        if not node.is_input:
            args, kwargs = node.arguments.fill_in({id(t): t for t in node.input_tensors})
            assert isinstance(args, (tuple, list)) and isinstance(kwargs, dict)
    assert model._outputs_struct.keys() == {"out"}
    sequential = next(op for op in ops if isinstance(op, keras.Sequential))
    assert sequential._functional is not None and supports_folding(sequential)


def test_flatten_layers_lists_nested_layers() -> None:
    """``zoo.fine_tuning`` finds every BatchNorm, nested models included, through ``_flatten_layers``."""
    model = _functional()
    layers = list(model._flatten_layers(include_self=False, recursive=True))
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in layers) == 1
    assert any(isinstance(layer, keras.layers.ReLU) for layer in layers)  # inside the Sequential


def test_missing_internals_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _functional()
    monkeypatch.delattr(model, "_nodes_by_depth")
    with pytest.raises(KerasInternalsError, match="keras<4"):
        supports_folding(model)

    class Net:
        keras_model = model

        def __call__(self, images):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(KerasInternalsError, match="_nodes_by_depth"):
        KerasBackend(Net())


def test_subclassed_models_are_not_walked_and_run_as_is() -> None:
    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not supports_folding(Sub())
    assert supports_folding(_functional())
    np.testing.assert_array_equal(Sub()(np.ones((1, 2), np.float32)), np.ones((1, 2)))


def test_keras_has_an_upper_bound() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    spec = re.search(r'"keras([^"]*)"', text)
    assert spec is not None and "<4" in spec.group(1).replace(" ", "")
    assert int(keras.__version__.split(".")[0]) == 3
