"""The keras backend's traced graph kept in the cache: a later load runs it without building or tracing,
with outputs identical bit for bit, and anything wrong with it sends the load down the ordinary path."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

import zoo
from tests.references import reference_image, small_zoo_folder
from zoo.backends.stored_trace import GRAPH_FILE, META_FILE, TraceStore
from zoo.cli import main
from zoo.hub.maintenance import layout_for, prune


def _cache() -> Path:
    return Path(os.environ["ODZOO_CACHE"])


def _traces() -> list[Path]:
    root = _cache() / "traces"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _images() -> list[np.ndarray]:
    image = reference_image()[0]
    return [image, image[40:300, 10:400]]


def _outputs(det: zoo.Detector) -> list[dict[str, np.ndarray]]:
    return [det.runner.infer(image[np.newaxis]) for image in _images()]


def _assert_identical(found: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]]) -> None:
    for got, want in zip(found, expected):
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def _first_and_second_load(source) -> tuple[zoo.Detector, list[dict[str, np.ndarray]], zoo.Detector]:
    first = zoo.load(source)
    assert not getattr(first.runner, "stored_trace", False)
    expected = _outputs(first)
    assert len(_traces()) == 1, "the first detection stores the traced graph"
    second = zoo.load(source)
    assert second.runner.stored_trace and second.runner.trace_count == 0
    return first, expected, second


@pytest.mark.parametrize("name", ["demo", "demo_ssd"])
def test_second_load_runs_the_stored_graph_with_identical_outputs(name: str) -> None:
    first, expected, second = _first_and_second_load(name)
    _assert_identical(_outputs(second), expected)
    assert second.runner.trace_count == 0, "nothing was built or traced"
    assert second.restore_report.ok and len(second.restore_report.matched) == len(first.restore_report.matched)
    batch = np.stack([_images()[0]] * 2)
    _assert_identical([second.runner.infer(batch)], [first.runner.infer(batch)])


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [
    ("faster_rcnn_resnet50_v1_640x640_coco17_tpu-8", 128), ("efficientdet_d0_coco17_tpu-32", 256),
])
def test_stored_graph_of_other_families(name: str, size: int, tmp_path: Path) -> None:
    folder = small_zoo_folder(name, tmp_path / "model", size)
    _, expected, second = _first_and_second_load(folder)
    _assert_identical(_outputs(second), expected)


def test_the_keras_model_is_built_when_asked_for_and_then_runs_live() -> None:
    _, expected, second = _first_and_second_load("demo")
    assert second.net is not None and second.model is not None  # builds and restores the Keras model
    _assert_identical(_outputs(second), expected)
    assert second.runner.trace_count == 1, "from then on the live graph runs (weights can change)"
    variable = second.net.checkpoint_map()
    assert variable, "the built model is the restored one"


def test_an_edited_pipeline_config_is_traced_again(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(zoo.load("demo").model_dir, folder)
    before = zoo.load(folder).detect(_images()[0])
    config = folder / "pipeline.config"
    text, edits = re.subn(r"max_box_predictions: \d+", "max_box_predictions: 3", config.read_text())
    assert edits == 1
    config.write_text(text)
    after = zoo.load(folder)
    assert not getattr(after.runner, "stored_trace", False)
    assert len(before) > 3 and len(after.detect(_images()[0])) == 3
    assert len(_traces()) == 2


def test_no_store_when_turned_off_or_classes_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODZOO_TRACE_CACHE", "0")
    zoo.load("demo").detect(_images()[0])
    assert _traces() == []
    assert not getattr(zoo.load("demo").runner, "stored_trace", False)
    monkeypatch.setenv("ODZOO_TRACE_CACHE", "1")
    zoo.load("demo", num_classes=2).detect(_images()[0])
    assert _traces() == [], "a re-initialised head is not what the checkpoint holds"


def _write_file_node(graph: Path, target: Path) -> None:
    """Add a ``WriteFile`` op to a stored graph (what a tampered file could hold)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef.FromString(graph.read_bytes())
    with tf.Graph().as_default() as scratch:
        tf.io.write_file(str(target), "x")
    graph_def.node.extend(n for n in scratch.as_graph_def().node)
    graph.write_bytes(graph_def.SerializeToString())


DAMAGES = {
    "truncated graph": lambda folder, tmp: (folder / GRAPH_FILE).write_bytes((folder / GRAPH_FILE).read_bytes()[:500]),
    "not JSON": lambda folder, tmp: (folder / META_FILE).write_text("{"),
    "another format": lambda folder, tmp: _edit_meta(folder, format=99),
    "a shape the checkpoint does not have": lambda folder, tmp: _edit_meta(folder, shape=[1, 2, 3]),
    "a key the checkpoint does not have": lambda folder, tmp: _edit_meta(folder, key="nowhere/kernel"),
    "a file-writing op": lambda folder, tmp: _write_file_node(folder / GRAPH_FILE, tmp / "written"),
    "graph missing": lambda folder, tmp: (folder / GRAPH_FILE).unlink(),
    "a report of another shape": lambda folder, tmp: _edit_meta(folder, report={"restored": "all"}),
}


def _edit_meta(folder: Path, **change) -> None:
    meta = json.loads((folder / META_FILE).read_text())
    if "format" in change or "report" in change:
        meta.update(change)
    else:
        meta["variables"][0].update(change)
    (folder / META_FILE).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def demo_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, np.ndarray]]]:
    """The demo model's stored graph (a copy) and its live outputs, made once for the module."""
    cache = tmp_path_factory.mktemp("demo_trace_cache")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ODZOO_CACHE", str(cache))
        expected = _outputs(zoo.load("demo"))
    (stored,) = sorted((cache / "traces").iterdir())
    kept = tmp_path_factory.mktemp("demo_trace") / stored.name
    shutil.copytree(stored, kept)
    return kept, expected


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_stored_graph_is_never_run_and_is_replaced(damage: str, tmp_path: Path, demo_trace) -> None:
    pristine, expected = demo_trace
    stored = _cache() / "traces" / pristine.name  # the same demo model in this test's cache: the same key
    shutil.copytree(pristine, stored)
    assert zoo.load("demo").runner.stored_trace, "the copy is the demo model's stored graph"
    DAMAGES[damage](stored, tmp_path)
    det = zoo.load("demo")
    assert not getattr(det.runner, "stored_trace", False), "the ordinary path was taken"
    _assert_identical(_outputs(det), expected)
    assert not (tmp_path / "written").exists()
    again = zoo.load("demo")
    assert again.runner.stored_trace, "the damaged graph was replaced by a fresh one"
    _assert_identical(_outputs(again), expected)


def test_prune_removes_traces_of_removed_folders_and_old_ones(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(zoo.load("demo").model_dir, folder)
    with open(folder / "pipeline.config", "a") as config:
        config.write("# a copy of the demo model\n")  # another file, so a trace of its own
    zoo.load(folder).detect(_images()[0])
    zoo.load("demo").detect(_images()[0])
    assert len(_traces()) == 2
    layout = layout_for()
    assert prune(layout) == [] or all(item.kind != "trace" for item in prune(layout, dry_run=True))
    shutil.rmtree(folder)
    items = prune(layout)
    assert [item.kind for item in items] == ["trace"] and len(_traces()) == 1
    (remaining,) = _traces()
    old = time.time() - 10 * 86400
    os.utime(remaining, (old, old))
    assert [item.kind for item in prune(layout, older_than_days=5)] == ["trace"]
    assert _traces() == [] and zoo.load("demo").restore_report.ok, "the cached model itself stays"


def test_store_entries_report_size_and_origin(capsys: pytest.CaptureFixture[str]) -> None:
    det = zoo.load("demo")
    det.detect(_images()[0])
    ((folder, size, used, model),) = TraceStore(_cache()).entries()
    assert size == sum(f.stat().st_size for f in folder.iterdir()) and model == det.model_dir
    assert abs(used - time.time()) < 600
    assert main(["cache", "ls", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["traces"]
    assert listed["path"] == str(folder) and listed["size_bytes"] == size and listed["model_folder"] == str(model)
    assert main(["cache", "ls"]) == 0
    assert "stored traced graphs: 1" in capsys.readouterr().out


def _tiny_function(variable, with_callback: bool = False):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)], autograph=False)
    def serve(images):
        x = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2])
        if with_callback:
            x = tf.py_function(lambda t: t, [x], tf.float32)
        return {"detection_scores": x * variable}

    return serve.get_concrete_function()


def test_store_round_trip_and_refusals_on_a_tiny_graph(tmp_path: Path) -> None:
    import tensorflow as tf

    variable = tf.Variable([1.0, 2.0, 3.0])
    prefix = tf.train.Checkpoint(v=variable).write(str(tmp_path / "ckpt" / "ckpt-0"))
    store = TraceStore(tmp_path / "cache")
    keys = {id(variable.handle): ("v", [3])}
    assert not store.save("callback", _tiny_function(variable, True), keys, {}, tmp_path), "a Python callback"
    assert not store.save("unknown", _tiny_function(variable), {}, {}, tmp_path), "an input that is no checkpoint key"
    assert store.entries() == []
    assert store.save("plain", _tiny_function(variable), keys, {}, tmp_path)
    graph = store.load("plain", prefix)
    images = tf.constant(np.arange(2 * 4 * 5 * 3).reshape(2, 4, 5, 3) % 256, tf.uint8)
    np.testing.assert_array_equal(graph(images)["detection_scores"], _tiny_function(variable)(images)["detection_scores"])
    assert graph.report.checkpoint == prefix
