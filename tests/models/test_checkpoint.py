"""Strict checkpoint restore: explicit key mapping, one grouped report, nothing assigned on failure."""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.checkpoint import (
    RestoreReport,
    checkpoint_prefix,
    match_variables,
    read_checkpoint_keys,
    restore,
)
from zoo.errors import CheckpointMismatchError, NotCachedError

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TF2 object-based checkpoint with a nested object graph and known values."""
    root = tf.train.Checkpoint(
        model=tf.train.Checkpoint(
            head=tf.train.Checkpoint(
                kernel=tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3)),
                bias=tf.Variable(np.array([1.0, 2.0, 3.0], np.float32)),
            ),
            base=tf.train.Checkpoint(gamma=tf.Variable(np.full([4], 0.5, np.float32))),
        )
    )
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    root.write(str(folder / "ckpt-0"))
    return folder


def _vars() -> dict[str, keras.Variable]:
    return {
        "model/head/kernel": keras.Variable(np.zeros([2, 3], np.float32)),
        "model/head/bias": keras.Variable(np.zeros([3], np.float32)),
        "model/base/gamma": keras.Variable(np.zeros([4], np.float32)),
    }


def test_prefix_resolution(small_checkpoint: Path) -> None:
    assert checkpoint_prefix(small_checkpoint).endswith("ckpt-0")
    assert checkpoint_prefix(small_checkpoint / "ckpt-0.index").endswith("ckpt-0")
    with pytest.raises(NotCachedError, match="does not exist"):
        checkpoint_prefix(small_checkpoint / "ckpt-9")
    keys = read_checkpoint_keys(small_checkpoint)
    assert keys["model/head/kernel" + SUFFIX] == (2, 3)


def test_strict_restore_assigns_every_value(small_checkpoint: Path) -> None:
    variables = _vars()
    report = restore(variables, small_checkpoint, model_variables=list(variables.values()))
    assert isinstance(report, RestoreReport) and report.ok and report.assigned
    assert report.matched == sorted(variables)
    assert report.missing == report.unexpected == report.shape_mismatches == []
    assert report.ignored  # the object graph is bookkeeping, not an unexpected variable
    np.testing.assert_array_equal(np.asarray(variables["model/head/kernel"]), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(np.asarray(variables["model/base/gamma"]), np.full([4], 0.5))


def test_unexpected_key_fails_and_leaves_model_untouched(small_checkpoint: Path) -> None:
    variables = _vars()
    del variables["model/base/gamma"]
    with pytest.raises(CheckpointMismatchError) as info:
        restore(variables, small_checkpoint)
    message = str(info.value)
    assert "left untouched" in message and "model/base/ (1): gamma" in message
    assert info.value.report.unexpected == ["model/base/gamma"]
    # Nothing assigned although the other two keys matched.
    assert not np.any(np.asarray(variables["model/head/kernel"]))


def test_missing_and_shape_mismatch_are_reported_together(small_checkpoint: Path) -> None:
    variables = _vars()
    variables["model/head/kernel"] = keras.Variable(np.zeros([3, 3], np.float32))
    variables["model/head/extra"] = keras.Variable(np.zeros([1], np.float32))
    stray = keras.Variable(np.zeros([2], np.float32))
    with pytest.raises(CheckpointMismatchError) as info:
        restore(variables, small_checkpoint, model_variables=[*variables.values(), stray])
    report = info.value.report
    assert report.shape_mismatches == [("model/head/kernel", (2, 3), (3, 3))]
    assert "model/head/extra" in report.missing
    assert any(m.startswith("<unmapped model variable>") for m in report.missing)
    assert "[2, 3] vs [3, 3]" in str(info.value)
    assert not np.any(np.asarray(variables["model/head/bias"]))


def test_non_strict_restores_what_matches(small_checkpoint: Path) -> None:
    variables = _vars()
    variables["model/head/kernel"] = keras.Variable(np.zeros([5], np.float32))
    report = restore(variables, small_checkpoint, strict=False)
    assert not report.ok and report.assigned
    assert report.matched == ["model/base/gamma", "model/head/bias"]
    np.testing.assert_array_equal(np.asarray(variables["model/head/bias"]), [1, 2, 3])
    assert not np.any(np.asarray(variables["model/head/kernel"]))


def test_skip_by_request_keeps_strictness_elsewhere(small_checkpoint: Path) -> None:
    variables = _vars()
    variables["model/head/kernel"] = keras.Variable(np.ones([2, 7], np.float32))  # new class count
    report = restore(variables, small_checkpoint, skip={"model/head/kernel": "num_classes changed"})
    assert report.ok and report.skipped == {"model/head/kernel": "num_classes changed"}
    assert "skipped by request" in report.summary() and "num_classes changed" in report.summary()
    np.testing.assert_array_equal(np.asarray(variables["model/head/kernel"]), np.ones([2, 7]))
    np.testing.assert_array_equal(np.asarray(variables["model/head/bias"]), [1, 2, 3])


def test_optimizer_slots_reported_separately() -> None:
    shapes = {
        "model/w" + SUFFIX: [2],
        "model/w/.OPTIMIZER_SLOT/optimizer/m" + SUFFIX: [2],
        "optimizer/iter" + SUFFIX: [],
        "save_counter" + SUFFIX: [],
        "_CHECKPOINTABLE_OBJECT_GRAPH": [],
    }
    report, plan = match_variables({"model/w": keras.Variable(np.zeros([2], np.float32))}, shapes)
    assert report.ok and len(plan) == 1
    assert sorted(report.optimizer) == ["model/w/.OPTIMIZER_SLOT/optimizer/m", "optimizer/iter"]
    assert "optimizer entries ignored" in report.summary()


def test_report_groups_many_keys_by_subtree() -> None:
    shapes = {f"model/_feature_extractor/_base_model/layer_with_weights-{i}/kernel": [1] for i in range(30)}
    report, _ = match_variables({}, shapes)
    text = report.summary()
    assert "30 checkpoint variables unexpected" in text
    assert text.count("model/_feature_extractor/_base_model/") == 1  # one line for the subtree
    assert "(+26)" in text
