"""The few-shot recipe on the embedded SSD demo detector: five images of a shape it has never seen
(a star), only the prediction heads train, and the new class goes from undetected to detected."""
from __future__ import annotations

import keras
import pytest

import zoo
from zoo.datasets.coco import CocoDataset
from zoo.datasets.stars import STAR, make_star_dataset
from zoo.fine_tuning import evaluate_detector

MODEL = "demo_ssd"  # alias of demo_ssd_shapes
#: Heads only, Adam at 0.03: about 0.02 -> 0.7 AP@0.5 on these 8 held-out images (60 steps: 0.753 on
#: benchmarks/bench_fewshot.py's 60).
STEPS, LEARNING_RATE = 30, 0.03


def _stars(root, images: int, seed: int) -> CocoDataset:
    out = make_star_dataset(root, images, seed=seed)
    return CocoDataset(out / "annotations.json", out / "images")


@pytest.mark.slow
def test_heads_learn_a_new_shape_from_five_images(tmp_path):
    train = _stars(tmp_path / "train", 5, seed=1000)
    held_out = _stars(tmp_path / "held_out", 8, seed=2000)
    keras.utils.set_random_seed(0)
    untrained = zoo.load(MODEL, num_classes=1, label_map={1: STAR}, progress=False)
    before = evaluate_detector(untrained, held_out).stats["AP50"]
    del untrained

    det = zoo.finetune(MODEL, train, num_classes=1, steps=STEPS, batch_size=5, learning_rate=LEARNING_RATE,
                       trainable="heads", progress=False, seed=0, recalibrate_batches=0)
    result = det.finetune_result
    after = evaluate_detector(det, held_out).stats["AP50"]

    assert det.label_map == {1: STAR}
    assert 0 < result.selection["trainable"] < result.selection["frozen"]  # the heads only
    assert result.history[-1]["total"] < 0.7 * result.history[0]["total"]  # the new class's loss falls
    assert before < 0.2 and after >= 0.6, (before, after)
