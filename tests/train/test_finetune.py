"""Fine-tuning a zoo checkpoint (synthesized from the zoo manifest) on synthetic shapes:
mAP improves over the re-initialised head, the export has the zoo's key layout, and the result
round-trips through the strict loader, the SavedModel and a private registry."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import CONFIGS, FIXTURES, MANIFESTS, TOOLS


ZOO_NAME = "centernet_mobilenetv2fpn_512x512_coco17_od"
LABELS = {1: "circle", 2: "square", 3: "triangle"}
SIZE = 128
STEPS = 40


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One fine-tune shared by the tests of this module (it is the slow part)."""
    import zoo
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.exporting import config_to_text, updated_config
    from zoo.fine_tuning import evaluate_detector
    from zoo.pipeline_config import load

    root = tmp_path_factory.mktemp("finetune")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ODZOO_CACHE", str(root / "cache"))
        mp.setenv("ODZOO_QUIET", "1")
        mp.delenv("ODZOO_REGISTRY", raising=False)
        # a zoo model folder: the zoo's checkpoint layout (synthesized) + its config at a reduced input size
        folder = root / "zoo_model"
        subprocess.run([sys.executable, str(TOOLS / "synth_checkpoint.py"), str(MANIFESTS / f"{ZOO_NAME}.json"),
                        str(folder / "checkpoint"), "--seed", "0",
                        "--overrides", str(FIXTURES / ZOO_NAME / "overrides.npz")], check=True, capture_output=True)
        cfg = updated_config(load(CONFIGS / ZOO_NAME / "pipeline.config"), input_size=(SIZE, SIZE))
        (folder / "pipeline.config").write_text(config_to_text(cfg) + "\n", encoding="utf-8")

        train = make_shapes_dataset(root / "train", 24, seed=11, image_size=SIZE)
        held = make_shapes_dataset(root / "heldout", 10, seed=12, image_size=SIZE)
        heldout = CocoDataset(held / "annotations.json", held / "images")

        import keras

        keras.utils.set_random_seed(0)
        untrained = zoo.load(folder, num_classes=3, label_map=LABELS)
        before = evaluate_detector(untrained, heldout).stats
        det = zoo.finetune(folder, train / "annotations.json", images=train / "images", steps=STEPS, batch_size=8,
                           learning_rate=3e-3, out_dir=root / "out", name="shapes_ft", progress=False,
                           recalibrate_batches=4)
        after = evaluate_detector(det, heldout).stats
        yield {"folder": folder, "det": det, "untrained": untrained, "before": before, "after": after,
               "heldout": heldout, "out": root / "out", "result": det.finetune_result}


@pytest.mark.slow
def test_finetune_improves_map_over_untrained_head(run):
    before, after = run["before"], run["after"]
    print(f"mAP@[.5:.95] {before['AP']:.4f} -> {after['AP']:.4f}; mAP@.5 {before['AP50']:.4f} -> {after['AP50']:.4f}")
    assert before["AP"] < 0.02  # the re-initialised 3-class head knows nothing
    assert after["AP"] > before["AP"] + 0.05
    assert after["AP50"] > before["AP50"] + 0.15
    history = run["result"].history
    assert history[-1]["total"] < history[0]["total"]
    assert run["untrained"].restore_report.skipped  # class-dependent head layers were re-initialised


@pytest.mark.slow
def test_export_has_the_zoo_layout_and_keys(run):
    import tensorflow as tf

    from zoo.checkpoint import read_checkpoint_keys
    from zoo.pipeline_config import load

    folder = run["result"].model_dir
    assert folder.name == "shapes_ft"
    assert {p.name for p in folder.iterdir()} == {"checkpoint", "pipeline.config", "saved_model", "label_map.pbtxt"}
    assert sorted(p.name for p in (folder / "checkpoint").iterdir()) == [
        "checkpoint", "ckpt-0.data-00000-of-00001", "ckpt-0.index"]
    manifest = {k: tuple(s) for k, s, _ in json.loads((MANIFESTS / f"{ZOO_NAME}.json").read_text())["variables"]}
    mine = read_checkpoint_keys(folder / "checkpoint")
    assert set(mine) == set(manifest)  # the same keys, object graph and save counter included
    changed = {k for k in manifest if manifest[k] != mine[k]}
    assert changed == {
        "model/_prediction_head_dict/object_center/0/layer_with_weights-1/kernel/.ATTRIBUTES/VARIABLE_VALUE",
        "model/_prediction_head_dict/object_center/0/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"}
    assert mine["model/_prediction_head_dict/object_center/0/layer_with_weights-1/bias/.ATTRIBUTES/VARIABLE_VALUE"] == (3,)
    cfg = load(folder / "pipeline.config")
    assert cfg.get("model.center_net.num_classes") == 3
    assert cfg.get("model.center_net.image_resizer.keep_aspect_ratio_resizer.max_dimension") == SIZE
    assert cfg.get("train_config.num_steps") == STEPS
    assert cfg.get("model.center_net.feature_extractor.type") == "mobilenet_v2_fpn_sep_conv"
    labels = (folder / "label_map.pbtxt").read_text()
    assert labels.count("item {") == 3 and 'name: "triangle"' in labels and "id: 3" in labels
    sig = tf.saved_model.load(str(folder / "saved_model")).signatures["serving_default"]
    spec = sig.structured_input_signature[1]["input_tensor"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [1, None, None, 3]
    outs = sig.structured_outputs
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        assert outs[key].dtype == tf.float32
    assert outs["detection_boxes"].shape.as_list() == [1, 100, 4]
    # the SavedModel computes what the Keras model computes
    image = next(iter(run["heldout"]))[1]
    served = sig(input_tensor=tf.constant(image[None]))
    mine = run["det"].detect(image)
    n = int(served["num_detections"].numpy()[0])
    assert n == len(mine)
    np.testing.assert_allclose(served["detection_scores"].numpy()[0, :n], mine.scores, atol=1e-4)
    np.testing.assert_array_equal(served["detection_classes"].numpy()[0, :10].astype(int), mine.classes[:10])
    np.testing.assert_allclose(served["detection_boxes"].numpy()[0, :10], mine.boxes_normalized[:10], atol=1e-4)


@pytest.mark.slow
def test_export_round_trips_through_strict_load(run):
    import zoo

    folder = run["result"].model_dir
    det = run["det"]  # finetune returns the model loaded back from the packed archive
    assert det.restore_report.ok and not det.restore_report.skipped
    again = zoo.load(folder, strict=True, label_map=LABELS)
    for _, image, _ in list(run["heldout"])[:3]:
        a, b = det.detect(image), again.detect(image)
        np.testing.assert_array_equal(a.classes, b.classes)
        np.testing.assert_allclose(a.boxes_normalized, b.boxes_normalized, atol=1e-6)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        assert set(a.labels) <= set(LABELS.values())


@pytest.mark.slow
def test_registered_result_loads_by_name(run, monkeypatch):
    import zoo

    result = run["result"]
    assert result.tarball.is_file() and result.size_bytes == result.tarball.stat().st_size
    monkeypatch.setenv("ODZOO_REGISTRY", str(result.registry))
    spec = zoo.info("shapes_ft")
    assert spec.num_classes == 3 and dict(spec.label_map) == LABELS and spec.sha256 == result.sha256
    assert spec.feature_extractor == "mobilenet_v2_fpn_sep_conv" and spec.input.max_dimension == SIZE
    det = zoo.load("shapes_ft")
    image = next(iter(run["heldout"]))[1]
    found = det.detect(image, score_threshold=0.2)
    assert len(found) and set(found.labels) <= set(LABELS.values())
    np.testing.assert_allclose(found.scores, run["det"].detect(image, score_threshold=0.2).scores, atol=1e-6)


@pytest.mark.slow
def test_finetune_rejects_bad_arguments(run, tmp_path):
    import zoo
    from zoo.errors import ConfigError, DatasetError

    held = run["heldout"]
    with pytest.raises(ConfigError, match="steps"):
        zoo.finetune(run["folder"], held, progress=False)
    with pytest.raises(DatasetError, match="num_classes"):
        zoo.finetune(run["folder"], held, num_classes=2, steps=1, progress=False)
    with pytest.raises(DatasetError, match="images="):
        zoo.finetune(run["folder"], held.annotations_path, steps=1, progress=False)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_finetune_checks_model_arguments_and_data_before_any_work(tmp_path):
    """Refusals that need no model: unknown or untrainable families, odd numbers, empty data."""
    import zoo
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.errors import ArgumentError, DatasetError, UnknownModelError, UnsupportedModelError

    data = make_shapes_dataset(tmp_path / "data", 2, seed=3, image_size=64)
    ann, images, out = data / "annotations.json", data / "images", tmp_path / "out"
    with pytest.raises(UnsupportedModelError, match="is a checkpoint .* not a detector"):
        zoo.finetune("extremenet", ann, images=images, steps=1, out_dir=out)
    with pytest.raises(UnknownModelError, match="Did you mean: demo_shapes"):
        zoo.finetune("demo_shape", ann, images=images, steps=1, out_dir=out)
    for kwargs, message in [({"steps": 1, "learning_rate": float("nan")}, "learning_rate must be a finite number"),
                            ({"steps": 0}, "steps must be at least 1"),
                            ({"epochs": -1.0}, "epochs must be greater than 0"),
                            ({"steps": 1, "batch_size": 0}, "batch_size must be at least 1"),
                            ({"steps": 1, "schedule": "linear"}, "schedule must be one of"),
                            ({"steps": 1, "input_size": 48}, "multiple of 32"),
                            ({"steps": 1, "name": "a/b"}, "not a valid model name")]:
        with pytest.raises(ArgumentError, match=message):
            zoo.finetune("demo_shapes", ann, images=images, out_dir=out, **kwargs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArgumentError, match="out_dir .* is a file"):
        zoo.finetune("demo_shapes", ann, images=images, steps=1, out_dir=tmp_path / "file")
    gt = json.loads(ann.read_text())
    for a in gt["annotations"]:
        a["iscrowd"] = 1
    (tmp_path / "crowds.json").write_text(json.dumps(gt))
    with pytest.raises(DatasetError, match="nothing to train on"):
        zoo.finetune("demo_shapes", tmp_path / "crowds.json", images=images, steps=1, out_dir=out)
    assert not out.exists()
