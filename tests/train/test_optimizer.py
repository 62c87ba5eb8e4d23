"""``train_config.optimizer`` -> Keras optimizer and schedule, as written and stretched to a run."""
from __future__ import annotations

import keras
import pytest

from zoo.errors import ConfigError
from zoo.pipeline_config import parse
from zoo.train.optimizer import (
    learning_rate_from_config,
    optimizer_from_config,
    reference_steps,
)
from zoo.train.trainer import TrainConfig, build_optimizer

#: The optimizer block of ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8's pipeline.config.
MOMENTUM_COSINE = """
train_config: {
  num_steps: 50000
  optimizer {
    momentum_optimizer: {
      learning_rate: {
        cosine_decay_learning_rate {
          learning_rate_base: .08
          total_steps: 50000
          warmup_learning_rate: .026666
          warmup_steps: 1000
        }
      }
      momentum_optimizer_value: 0.9
    }
    use_moving_average: false
  }
}
"""

#: The optimizer block of centernet_hg104_512x512_coco17_tpu-8's pipeline.config, with its num_steps.
ADAM_MANUAL_STEP = """
train_config: {
  num_steps: 140000
  optimizer {
    adam_optimizer: {
      epsilon: 1e-7
      learning_rate: {
        manual_step_learning_rate {
          initial_learning_rate: 1e-3
          schedule { step: 90000 learning_rate: 1e-4 }
          schedule { step: 120000 learning_rate: 1e-5 }
        }
      }
    }
    use_moving_average: false
  }
}
"""


def _train(text: str):
    return parse(text)["train_config"]


def _rate(schedule, step: int) -> float:
    return float(schedule(step)) if callable(schedule) else float(schedule)


def test_momentum_cosine_as_written():
    train = _train(MOMENTUM_COSINE)
    opt = optimizer_from_config(train["optimizer"])
    assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == pytest.approx(0.9)
    lr = learning_rate_from_config(train["optimizer"])
    assert _rate(lr, 0) == pytest.approx(0.026666)
    assert _rate(lr, 500) == pytest.approx((0.026666 + 0.08) / 2, rel=1e-5)
    assert _rate(lr, 1000) == pytest.approx(0.08)
    assert _rate(lr, 25500) == pytest.approx(0.04, rel=1e-4)  # half-way through the cosine
    assert _rate(lr, 50000) == pytest.approx(0.0, abs=1e-7)


def test_cosine_is_stretched_to_the_run():
    train = _train(MOMENTUM_COSINE)
    assert reference_steps(train["optimizer"]) == 50000
    lr = learning_rate_from_config(train["optimizer"], steps=100)  # factor 1/500: 2 warmup steps of 100
    assert _rate(lr, 0) == pytest.approx(0.026666)
    assert _rate(lr, 1) == pytest.approx((0.026666 + 0.08) / 2, rel=1e-5)
    assert _rate(lr, 2) == pytest.approx(0.08)
    assert _rate(lr, 51) == pytest.approx(0.04, rel=1e-4)
    assert _rate(lr, 100) == pytest.approx(0.0, abs=1e-7)
    # a run shorter than one scaled warmup step starts at the peak
    assert _rate(learning_rate_from_config(train["optimizer"], steps=10), 0) == pytest.approx(0.08)


def test_adam_manual_step_as_written_and_stretched():
    train = _train(ADAM_MANUAL_STEP)
    opt = optimizer_from_config(train["optimizer"])
    assert isinstance(opt, keras.optimizers.Adam) and opt.epsilon == pytest.approx(1e-7)
    lr = learning_rate_from_config(train["optimizer"], num_steps=140000)
    assert [_rate(lr, s) for s in (0, 90000, 90001, 120001)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])
    short = learning_rate_from_config(train["optimizer"], steps=140, num_steps=140000)  # boundaries 90, 120
    assert [_rate(short, s) for s in (0, 90, 91, 120, 121, 140)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    # without the config's length nothing is stretched
    assert _rate(learning_rate_from_config(train["optimizer"], steps=140), 121) == pytest.approx(1e-3)


def test_rms_prop_exponential_and_constant():
    rms = parse("""optimizer { rms_prop_optimizer { learning_rate { exponential_decay_learning_rate {
        initial_learning_rate: 0.1 decay_steps: 10 decay_factor: 0.5 } } } }""")["optimizer"]
    opt = optimizer_from_config(rms)
    assert isinstance(opt, keras.optimizers.RMSprop)
    assert (opt.rho, opt.momentum, opt.epsilon) == pytest.approx((0.9, 0.9, 1.0))  # optimizer.proto's defaults
    lr = learning_rate_from_config(rms)
    assert [_rate(lr, s) for s in (0, 9, 10, 25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])  # staircase
    stretched = learning_rate_from_config(rms, steps=20, num_steps=100)  # decays every 2 steps
    assert [_rate(stretched, s) for s in (1, 2, 4)] == pytest.approx([0.1, 0.05, 0.025])
    const = parse("optimizer { momentum_optimizer { learning_rate { constant_learning_rate { learning_rate: 0.02 } }"
                  " momentum_optimizer_value: 0.5 } }")["optimizer"]
    opt = optimizer_from_config(const, steps=10)
    assert isinstance(opt, keras.optimizers.SGD) and opt.momentum == pytest.approx(0.5)
    assert learning_rate_from_config(const, steps=10) == pytest.approx(0.02)


@pytest.mark.parametrize("text, message", [
    ("optimizer { lars_optimizer { learning_rate { constant_learning_rate { } } } }", "lars_optimizer is not supported"),
    ("optimizer { adam_optimizer { } }", "has no learning_rate"),
    ("optimizer { adam_optimizer { learning_rate { cosine_decay_learning_rate { hold_base_rate_steps: 5 } } } }",
     "hold_base_rate_steps"),
    ("optimizer { adam_optimizer { learning_rate { cosine_decay_learning_rate { learning_rate_base: 0.01 "
     "warmup_learning_rate: 0.1 } } } }", "above learning_rate_base"),
    ("optimizer { adam_optimizer { learning_rate { constant_learning_rate { learning_rate: 0 } } } }", "positive"),
])
def test_unsupported_or_invalid_configs_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        optimizer_from_config(parse(text)["optimizer"], steps=10)


def test_train_config_uses_the_pipeline_unless_told_otherwise():
    train = _train(MOMENTUM_COSINE)
    from_config = build_optimizer(TrainConfig(steps=100, pipeline_train_config=train))
    assert isinstance(from_config, keras.optimizers.SGD)
    assert float(from_config.learning_rate) == pytest.approx(0.026666)  # step 0 of the stretched warmup
    for explicit in ({"learning_rate": 0.01}, {"schedule": "constant"}, {"warmup_steps": 0}):
        adam = build_optimizer(TrainConfig(steps=100, pipeline_train_config=train, **explicit))
        assert isinstance(adam, keras.optimizers.Adam), explicit
    assert float(build_optimizer(TrainConfig(steps=100, learning_rate=0.01)).learning_rate) == pytest.approx(0.0025)
    assert isinstance(build_optimizer(TrainConfig(steps=100)), keras.optimizers.Adam)  # no pipeline: Adam 1e-3


def test_finetune_takes_the_configs_optimizer_unless_given_a_learning_rate(tmp_path):
    import zoo
    from tests.train.test_loop import TINY_CONFIG, register_tiny
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset

    register_tiny()
    config = tmp_path / "pipeline.config"
    config.write_text(TINY_CONFIG.replace("train_config { batch_size: 4 num_steps: 10 }", MOMENTUM_COSINE),
                      encoding="utf-8")
    data = make_shapes_dataset(tmp_path / "shapes", 4, seed=3, image_size=64)
    ds = CocoDataset(data / "annotations.json", data / "images")
    common = {"steps": 2, "batch_size": 4, "progress": False, "recalibrate_batches": 0, "augment": False}
    assert zoo.finetune(config, ds, **common).finetune_result.optimizer == "SGD"
    assert zoo.finetune(config, ds, learning_rate=1e-3, **common).finetune_result.optimizer == "Adam"
