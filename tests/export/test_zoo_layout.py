"""Export in the zoo layout: checkpoint keys, pipeline.config text, SavedModel signature, label map,
reproducible tarball, registry entry; and the ``odzoo finetune`` command (on a tiny CenterNet)."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import CONFIGS
from tests.train.test_loop import TINY_CONFIG, register_tiny
from zoo.exporting import (
    config_to_text,
    export_model,
    make_tarball,
    registry_entry,
    updated_config,
    write_checkpoint,
    write_label_map,
    write_registry,
)
from zoo.pipeline_config import load, parse

LABELS = {1: "circle", 2: "square", 3: "triangle"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CenterNet fine-tuned in memory (no out_dir) on synthetic shapes."""
    import zoo
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset

    register_tiny()
    root = tmp_path_factory.mktemp("export")
    config = root / "pipeline.config"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    data = make_shapes_dataset(root / "shapes", 8, seed=3, image_size=64)
    ds = CocoDataset(data / "annotations.json", data / "images")
    det = zoo.finetune(config, ds, steps=4, batch_size=4, progress=False, recalibrate_batches=1)
    images = [image for _, image, _ in ds][:3]
    return {"det": det, "config": config, "root": root, "images": images, "dataset": ds}


def test_in_memory_model_and_export_give_the_same_detections(trained, tmp_path):
    import zoo

    det = trained["det"]
    assert det.label_map == LABELS and det.finetune_result.steps == 4
    result = export_model(det, tmp_path / "tiny", config=trained["config"], label_map=LABELS)
    again = zoo.load(result.folder, strict=True, label_map=LABELS)
    assert again.restore_report.ok and len(again.restore_report.matched) == len(det.net.checkpoint_map())
    served = zoo.load(result.folder, backend="saved_model", label_map=LABELS)
    for image in trained["images"]:
        a, b, c = det.detect(image), again.detect(image), served.detect(image)
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        np.testing.assert_allclose(a.boxes_normalized, b.boxes_normalized, atol=1e-6)
        np.testing.assert_allclose(a.scores, c.scores, atol=1e-5)
        assert a.labels == c.labels


def test_a_model_folder_names_its_classes_from_its_label_map(trained, tmp_path):
    """Loaded from its folder without label_map=, a fine-tuned model uses the folder's
    label_map.pbtxt (not the COCO names of its class ids)."""
    import zoo

    result = export_model(trained["det"], tmp_path / "shapes", config=trained["config"], label_map=LABELS,
                          saved_model=False)
    for det in (zoo.load(result.folder), zoo.load(str(result.folder))):
        assert det.label_map == LABELS
        found = det.detect(trained["images"][0])
        assert len(found) and set(found.labels) <= set(LABELS.values())
        assert "person" not in found.labels
    (result.folder / "label_map.pbtxt").write_text('item { id: 1 name: "one" }\nitem { id: 3 display_name: "three" }\n')
    assert zoo.load(result.folder).label_map == {1: "one", 3: "three"}
    assert zoo.load(result.folder, label_map={1: "given"}).label_map == {1: "given"}


def test_checkpoint_keys_are_exactly_the_map(tmp_path):
    from zoo.checkpoint import read_checkpoint_keys

    values = {
        "model/_feature_extractor/_base_model/layer_with_weights-0/kernel": np.ones((3, 3, 3, 4), np.float32),
        "model/_prediction_head_dict/box.Soffset/0/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE":
            np.arange(2, dtype=np.float32),
        "model/_prediction_head_dict/object_center/0/layer_with_weights-1/bias": np.zeros(3, np.float32),
    }
    prefix = write_checkpoint(values, tmp_path / "checkpoint")
    assert prefix.name == "ckpt-0"
    keys = read_checkpoint_keys(tmp_path / "checkpoint")
    assert set(keys) == {
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_feature_extractor/_base_model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_prediction_head_dict/box.Soffset/0/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_prediction_head_dict/object_center/0/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE",
    }
    reader = tf.train.load_checkpoint(str(prefix))
    np.testing.assert_array_equal(
        reader.get_tensor("model/_prediction_head_dict/box.Soffset/0/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"),
        [0.0, 1.0])


def test_config_text_round_trips_every_zoo_config():
    configs = sorted(CONFIGS.glob("*/pipeline.config"))
    assert len(configs) >= 40
    for path in configs:
        cfg = load(path)
        assert parse(config_to_text(cfg)).to_dict() == cfg.to_dict(), path


def test_updated_config_sets_classes_input_and_training_facts():
    cfg = parse(TINY_CONFIG)
    new = updated_config(cfg, num_classes=7, input_size=(96, 96), batch_size=2, num_steps=9)
    assert new.get("model.center_net.num_classes") == 7
    assert new.get("model.center_net.image_resizer.keep_aspect_ratio_resizer.min_dimension") == 96
    assert new.get("train_config.batch_size") == 2 and new.get("train_config.num_steps") == 9
    rect = updated_config(cfg, input_size=(64, 128))
    assert rect.get("model.center_net.image_resizer.fixed_shape_resizer.width") == 128
    assert cfg.get("model.center_net.num_classes") == 3  # the original is untouched


def test_tarball_is_reproducible_and_registry_entry_validates(trained, tmp_path, monkeypatch, capsys):
    import zoo
    from zoo.registry import parse_registry_file

    result = export_model(trained["det"], tmp_path / "tiny_shapes", config=trained["config"], label_map=LABELS,
                          saved_model=False)
    path, sha, size = make_tarball(result.folder, tmp_path / "a" / "tiny_shapes.tar.gz")
    _, sha2, _ = make_tarball(result.folder, tmp_path / "b" / "tiny_shapes.tar.gz")
    assert sha == sha2 and size == path.stat().st_size
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert all(n == "tiny_shapes" or n.startswith("tiny_shapes/") for n in names)
        assert "tiny_shapes/checkpoint/ckpt-0.index" in names and "tiny_shapes/label_map.pbtxt" in names
        assert all(m.mtime == 0 for m in tar.getmembers())
    entry = registry_entry("tiny_shapes", path, config=result.pipeline_config, label_map=LABELS, sha256=sha,
                           size_bytes=size)
    registry = write_registry(tmp_path / "registry.yaml", [entry])
    spec = parse_registry_file(registry)[0]
    assert (spec.name, spec.num_classes, spec.archive_top, spec.sha256) == ("tiny_shapes", 3, "tiny_shapes", sha)
    assert spec.input.max_dimension == 64 and dict(spec.label_map) == LABELS
    monkeypatch.setenv("ODZOO_REGISTRY", str(registry))
    det = zoo.load("tiny_shapes")
    found = det.detect(trained["images"][0])
    assert set(found.labels) <= set(LABELS.values())
    np.testing.assert_allclose(found.scores, trained["det"].detect(trained["images"][0]).scores, atol=1e-6)
    # and it benchmarks like any zoo model, label names from the label map
    from zoo.cli import main

    ds = trained["dataset"]
    capsys.readouterr()
    rc = main(["bench", "tiny_shapes", "--annotations", str(ds.annotations_path), "--images", str(ds.images_dir),
               "--iterations", "2", "--min-duration", "0", "--warmup", "1", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    record = json.loads(out[out.index("{"):])["models"][0]
    assert "error" not in record and record["model"] == "tiny_shapes"


def test_label_map_file(tmp_path):
    path = write_label_map({2: 'say "hi"', 1: "a"}, tmp_path / "label_map.pbtxt")
    msg = parse(path.read_text())
    assert [(i.get("id"), i.get("name")) for i in msg.all("item")] == [(1, "a"), (2, 'say "hi"')]
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError):
        write_label_map({0: "background"}, tmp_path / "bad.pbtxt")


def test_odzoo_finetune_command(trained, tmp_path, capsys):
    from zoo.cli import main

    ds = trained["dataset"]
    out = tmp_path / "run"
    rc = main(["finetune", "--model", str(trained["config"]), "--annotations", str(ds.annotations_path),
               "--images", str(ds.images_dir), "--steps", "2", "--batch-size", "4", "--out", str(out),
               "--name", "tiny_cli", "--no-saved-model", "--checkpoint-every", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "tiny_cli.tar.gz" in text and "registry.yaml" in text
    assert (out / "tiny_cli" / "checkpoint" / "ckpt-0.index").is_file()
    assert (out / "train" / "ckpt-2.index").is_file()
    entry = json.loads(json.dumps(__import__("yaml").safe_load((out / "registry.yaml").read_text())))
    assert entry["models"][0]["name"] == "tiny_cli"
    # epochs instead of steps, and a different input size: the export describes what was trained
    other = tmp_path / "run2"
    rc = main(["finetune", "--model", str(trained["config"]), "--annotations", str(ds.annotations_path),
               "--images", str(ds.images_dir), "--epochs", "0.5", "--batch-size", "4", "--input-size", "32",
               "--out", str(other), "--name", "tiny_small", "--no-saved-model", "--no-augment"])
    assert rc == 0
    cfg = load(other / "tiny_small" / "pipeline.config")
    assert cfg.get("model.center_net.image_resizer.keep_aspect_ratio_resizer.max_dimension") == 32
    assert cfg.get("train_config.num_steps") == 1  # ceil(0.5 * 8 images / 4)
    capsys.readouterr()
    rc = main(["finetune", "--model", str(trained["config"]), "--annotations", str(ds.annotations_path),
               "--images", str(ds.images_dir), "--steps", "0", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--steps" in err and len(err.splitlines()) == 1
