"""The training loop on a tiny CenterNet: loss goes down, schedule, checkpoints/resume, BatchNorm
recalibration, and MirroredStrategy over two logical CPU devices (in a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import keras

from zoo.datasets.coco import CocoDataset
from zoo.datasets.synthetic import make_shapes_dataset
from zoo.train.data import InputGeometry, TrainingData
from zoo.train.optimizer import warmup_cosine_decay
from zoo.train.trainer import (
    TrainConfig,
    Trainer,
    learning_rate_schedule,
)

ROOT = Path(__file__).resolve().parents[2]
TINY_TYPE = "tiny_test_backbone"

TINY_CONFIG = """
model { center_net {
  num_classes: 3
  feature_extractor { type: "TINY_TYPE" }
  image_resizer { keep_aspect_ratio_resizer { min_dimension: 64 max_dimension: 64 pad_to_max_dimension: true } }
  object_detection_task { task_loss_weight: 1.0 offset_loss_weight: 1.0 scale_loss_weight: 0.1
    box_head_num_filters: 16 localization_loss { l1_localization_loss { } } }
  object_center_params { object_center_loss_weight: 1.0 center_head_num_filters: 16 min_box_overlap_iou: 0.7
    max_box_predictions: 20 classification_loss { penalty_reduced_logistic_focal_loss { alpha: 2.0 beta: 4.0 } } }
} }
train_config { batch_size: 4 num_steps: 10 }
""".replace("TINY_TYPE", TINY_TYPE)


class TinyBackbone:
    """A three-conv stride-4 backbone with one BatchNorm, following the backbone contract."""

    stride = 4

    def __init__(self, config: object = None) -> None:
        self.config = config

    def preprocess(self, images):
        return images / 127.5 - 1.0

    def build(self):
        x = keras.Input((None, None, 3))
        y = keras.layers.Conv2D(12, 3, strides=2, padding="same", activation="relu")(x)
        y = keras.layers.Conv2D(16, 3, strides=2, padding="same")(y)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU()(y)
        y = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(y)
        return keras.Model(x, [y])

    def checkpoint_map(self, model):
        out = {}
        for n, layer in enumerate(l for l in model.layers if l.weights):
            for w in layer.weights:
                out[f"_tiny/layer_with_weights-{n}/{w.name}"] = w
        return out


def register_tiny() -> None:
    from zoo.models.registry import register_feature_extractor

    register_feature_extractor(TINY_TYPE, meta="center_net")(TinyBackbone)


def tiny_net(num_classes: int = 3):
    from zoo.models.builder import build_model
    from zoo.pipeline_config import parse

    register_tiny()
    return build_model(parse(TINY_CONFIG), num_classes=num_classes)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = make_shapes_dataset(tmp_path_factory.mktemp("shapes"), 16, seed=5, image_size=(64, 64))
    return CocoDataset(root / "annotations.json", root / "images")


def test_learning_rate_schedule():
    s = warmup_cosine_decay(1e-3, total_steps=100, warmup_steps=10, warmup_learning_rate=2e-4)
    assert float(s(0)) == pytest.approx(2e-4)
    assert float(s(5)) == pytest.approx(6e-4)
    assert float(s(10)) == pytest.approx(1e-3)
    assert float(s(55)) == pytest.approx(5e-4, rel=1e-4)
    assert float(s(100)) == pytest.approx(0.0, abs=1e-9)
    flat = learning_rate_schedule(TrainConfig(steps=50, learning_rate=3e-3, schedule="constant", warmup_steps=0))
    assert float(flat(40)) == pytest.approx(3e-3)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(steps=5, schedule="linear")


def test_trainer_lowers_loss_checkpoints_and_resumes(shapes, tmp_path):
    keras.utils.set_random_seed(0)
    net = tiny_net()
    data = TrainingData(shapes, InputGeometry(64, 64), 3, seed=0)
    config = TrainConfig(steps=30, batch_size=8, learning_rate=5e-3, checkpoint_every=15)
    before = [v.numpy().copy() for v in net.keras_model.trainable_variables]
    result = Trainer(net, data, config, out_dir=tmp_path).run(progress=False, log_every=5)
    assert result.steps_run == 30 and result.final_step == 30
    assert result.history[-1]["total"] < 0.6 * result.history[0]["total"]
    assert all(np.isfinite(h["total"]) for h in result.history)
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, net.keras_model.trainable_variables))
    assert [Path(p).name for p in result.checkpoints] == ["ckpt-15", "ckpt-30"]
    assert (tmp_path / "train" / "checkpoint").is_file()

    # a fresh model with the same out_dir resumes at step 30: weights restored, nothing left to do
    keras.utils.set_random_seed(1)
    again = tiny_net()
    trainer = Trainer(again, data, config, out_dir=tmp_path)
    assert int(trainer.step.numpy()) == 30
    for a, b in zip(net.keras_model.weights, again.keras_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert trainer.run(progress=False).steps_run == 0
    longer = Trainer(again, data, TrainConfig(steps=33, batch_size=8, learning_rate=5e-3), out_dir=tmp_path)
    assert longer.run(progress=False).steps_run == 3


def test_recalibrate_batch_norm_sets_statistics_of_the_data(shapes):
    from zoo.train.batch_norm import recalibrate_batch_norm

    net = tiny_net()
    data = TrainingData(shapes, InputGeometry(64, 64), 3, seed=0)
    bn = [l for l in net.keras_model._flatten_layers(recursive=True) if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bn) == 1
    np.testing.assert_array_equal(bn[0].moving_mean.numpy(), 0.0)
    assert recalibrate_batch_norm(net, data, batches=3, batch_size=4) == 1
    assert bn[0].momentum == pytest.approx(0.99)  # restored
    # the moving mean is now the mean activation entering the BatchNorm over those images
    batch = next(iter(data.tf_dataset(16, shuffle=False, repeat=False, augmented=False)))
    inner = net.backbone_model
    probe = keras.Model(inner.input, inner.layers[2].output)
    expected = probe(net.backbone.preprocess(batch["image"])).numpy().mean(axis=(0, 1, 2))
    np.testing.assert_allclose(bn[0].moving_mean.numpy(), expected, rtol=0.15, atol=0.05)


def test_mirrored_strategy_two_logical_cpus(shapes, tmp_path):
    """finetune under MirroredStrategy over 2 logical CPUs; must configure devices before TF starts."""
    config = tmp_path / "pipeline.config"
    config.write_text(TINY_CONFIG, encoding="utf-8")
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        sys.path.insert(0, {str(ROOT)!r})
        from tests.train.test_loop import register_tiny
        register_tiny()
        import zoo
        from zoo.datasets.coco import CocoDataset
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        ds = CocoDataset({str(shapes.annotations_path)!r}, {str(shapes.images_dir)!r})
        det = zoo.finetune({str(config)!r}, ds, steps=6, batch_size=4, learning_rate=3e-3, strategy=strategy,
                           progress=False, recalibrate_batches=2)
        var = det.net.keras_model.trainable_variables[0]
        r = det.finetune_result
        found = det.detect(ds.load_image(ds.image_ids[0]))
        print(json.dumps({{"replicas": strategy.num_replicas_in_sync, "steps": r.steps,
                           "losses": [h["total"] for h in r.history], "labels": det.label_map,
                           "mirrored": "Mirrored" in type(getattr(var, "value", var)).__name__
                                       or "Mirrored" in type(var).__name__ or hasattr(var, "values"),
                           "detections": len(found)}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["steps"] == 6 and all(np.isfinite(report["losses"]))
    assert report["labels"] == {"1": "circle", "2": "square", "3": "triangle"}
    assert report["detections"] == 20  # max_box_predictions of the tiny config
    assert report["mirrored"]  # the variables were created as mirrored variables


KEYPOINT_CONFIG = TINY_CONFIG.replace("num_classes: 3", "num_classes: 1").replace(
    "} }\ntrain_config { batch_size: 4 num_steps: 10 }",
    """keypoint_estimation_task { task_name: "human_pose" task_loss_weight: 1.0 keypoint_class_name: "/m/01g317"
    keypoint_regression_loss_weight: 0.1 keypoint_heatmap_loss_weight: 1.0 keypoint_offset_loss_weight: 1.0
    per_keypoint_offset: true heatmap_head_num_filters: 16 regress_head_num_filters: 16 offset_head_num_filters: 16 }
} }
train_config { batch_size: 4 num_steps: 10
  data_augmentation_options { random_horizontal_flip {
    FLIPS } } }
""".replace("FLIPS", " ".join(f"keypoint_flip_permutation: {i}"
                               for i in (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15))))


def test_keypoint_model_trains_its_keypoint_heads(shapes, tmp_path):
    """A one-class (person) keypoint CenterNet: keypoint targets and losses take part in training."""
    import zoo
    from zoo.train.families import augment_config
    from zoo.labels import PERSON_KEYPOINTS
    from zoo.pipeline_config import parse

    assert "keypoint_estimation_task" in KEYPOINT_CONFIG
    data = json.loads(Path(shapes.annotations_path).read_text())
    names = list(PERSON_KEYPOINTS)
    data["categories"] = [{"id": 1, "name": "person", "keypoints": names, "skeleton": []}]
    for ann in data["annotations"]:
        ann["category_id"] = 1
        x, y, w, h = ann["bbox"]
        pts = []
        for k in range(len(names)):  # keypoints spread over the box, the last two not visible
            pts += [x + w * (k + 1) / (len(names) + 1), y + h * ((k % 4) + 1) / 5, 0 if k >= 15 else 2]
        ann["keypoints"] = pts
        ann["num_keypoints"] = 15
    ann_path = tmp_path / "person.json"
    ann_path.write_text(json.dumps(data))
    config = tmp_path / "pipeline.config"
    config.write_text(KEYPOINT_CONFIG, encoding="utf-8")
    assert augment_config(parse(KEYPOINT_CONFIG)).keypoint_flip_permutation[:3] == (0, 2, 1)
    register_tiny()
    det = zoo.finetune(config, ann_path, images=shapes.images_dir, steps=4, batch_size=4, progress=False,
                       recalibrate_batches=1)
    history = det.finetune_result.history
    for key in ("keypoint/heatmap", "keypoint/offset", "keypoint/regression"):
        assert key in history[-1] and np.isfinite(history[-1][key]) and history[-1][key] > 0, key
    found = det.detect(shapes.load_image(shapes.image_ids[0]))
    assert found.keypoints is not None and found.keypoints.shape[1:] == (17, 2)
    assert set(found.labels) == {"person"}
