"""The optimizer and learning-rate schedule of a ``pipeline.config``'s ``train_config.optimizer``, as
Keras objects.

Optimizers: ``momentum_optimizer`` (``keras.optimizers.SGD`` with ``momentum_optimizer_value``,
default 0.9), ``adam_optimizer`` (``Adam`` with the config's ``epsilon``, default 1e-8) and
``rms_prop_optimizer`` (``RMSprop``: ``decay`` is rho, ``momentum_optimizer_value`` the momentum,
``epsilon`` default 1.0). Learning rates: ``constant_learning_rate``, ``exponential_decay_learning_rate``
(``ExponentialDecay``), ``manual_step_learning_rate`` (``PiecewiseConstantDecay``) and
``cosine_decay_learning_rate`` (``CosineDecay`` with its linear warmup from
``warmup_learning_rate`` to ``learning_rate_base``). Unset fields take the defaults of the Object
Detection API's ``optimizer.proto``. ``use_moving_average`` is not applied.

**Scaling to the run.** A zoo schedule is laid out for the config's own length (``total_steps`` of
a cosine schedule, otherwise ``train_config.num_steps``: 25,000 to 300,000 steps), while a
fine-tuning run is often a few hundred or, few-shot, a few dozen. Given ``steps`` (the run's length)
every step count of the schedule (warmup and total steps, decay steps, step boundaries) is
multiplied by ``steps / reference`` (rounded), so the run goes through the whole schedule: warmup,
peak, decay to the end. The learning-rate values are kept. Without ``steps`` the schedule is used
as written.
"""
from __future__ import annotations

from typing import Any

import keras

from ..errors import ConfigError
from ..pipeline_config import Message

__all__ = ["OPTIMIZERS", "SCHEDULES", "learning_rate_from_config", "optimizer_from_config", "reference_steps",
           "warmup_cosine_decay"]

#: ``train_config.optimizer`` kinds odzoo builds.
OPTIMIZERS = ("momentum_optimizer", "adam_optimizer", "rms_prop_optimizer")
#: ``learning_rate`` kinds odzoo builds.
SCHEDULES = ("constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate",
             "cosine_decay_learning_rate")

LearningRate = float | keras.optimizers.schedules.LearningRateSchedule


def warmup_cosine_decay(base: float, total_steps: int, warmup_steps: int = 0, warmup_learning_rate: float = 0.0,
                        *, constant: bool = False) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup from ``warmup_learning_rate`` to ``base`` over ``warmup_steps``, then a cosine from
    ``base`` to 0 at ``total_steps`` (``constant``: stays at ``base``); 0 after ``total_steps``."""
    warmup = max(0, min(int(warmup_steps), int(total_steps) - 1))
    alpha = 1.0 if constant else 0.0
    decay_steps = max(1, int(total_steps) - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(float(base), decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(float(warmup_learning_rate), decay_steps, alpha=alpha,
                                                  warmup_target=float(base), warmup_steps=warmup)


def _field(msg: Message, name: str, default: Any) -> Any:
    return msg[name] if name in msg else default


def _positive(value: Any, field: str) -> float:
    number = float(value)
    if not number > 0:
        raise ConfigError(f"train_config.optimizer: {field} must be positive, got {value}")
    return number


def _learning_rate_message(optimizer: Message) -> tuple[str, Message, Message]:
    """``(optimizer kind, optimizer message, learning_rate oneof message)``."""
    kinds = [k for k in optimizer.keys() if k.endswith("_optimizer")]
    if len(kinds) != 1:
        raise ConfigError(f"train_config.optimizer must name one optimizer, found {kinds or 'none'}")
    kind = kinds[0]
    if kind not in OPTIMIZERS:
        raise ConfigError(f"train_config.optimizer: {kind} is not supported (odzoo builds {', '.join(OPTIMIZERS)}); "
                          "give a learning rate explicitly to train with Adam")
    msg = optimizer[kind]
    if "learning_rate" not in msg:
        raise ConfigError(f"train_config.optimizer.{kind} has no learning_rate")
    schedules = msg["learning_rate"].keys()
    if len(schedules) != 1 or schedules[0] not in SCHEDULES:
        raise ConfigError(f"train_config.optimizer.{kind}.learning_rate: {', '.join(schedules) or 'nothing'} is not "
                          f"supported (odzoo builds {', '.join(SCHEDULES)})")
    return kind, msg, msg["learning_rate"]


def reference_steps(optimizer: Message, num_steps: int | None = None) -> int | None:
    """The length the config's schedule is laid out for: a cosine schedule's ``total_steps``,
    otherwise ``num_steps`` (the config's ``train_config.num_steps``; None or 0: unknown)."""
    _, _, rate = _learning_rate_message(optimizer)
    kind, msg = rate.oneof()
    if kind == "cosine_decay_learning_rate":
        return int(_field(msg, "total_steps", 4_000_000))
    return int(num_steps) if num_steps else None


def learning_rate_from_config(optimizer: Message, *, steps: int | None = None,
                              num_steps: int | None = None) -> LearningRate:
    """The learning rate (a float or a Keras schedule) of a ``train_config.optimizer`` message,
    stretched to ``steps`` when given (see the module docstring; ``num_steps``: the config's
    ``train_config.num_steps``)."""
    _, _, rate = _learning_rate_message(optimizer)
    kind, msg = rate.oneof()
    reference = reference_steps(optimizer, num_steps)
    factor = steps / reference if steps and reference else 1.0

    def scaled(count: Any) -> int:
        return int(round(int(count) * factor))

    where = f"train_config.optimizer ... {kind}"
    if kind == "constant_learning_rate":
        return _positive(_field(msg, "learning_rate", 0.002), f"{kind}.learning_rate")
    if kind == "cosine_decay_learning_rate":
        if int(_field(msg, "hold_base_rate_steps", 0)):
            raise ConfigError(f"{where}: hold_base_rate_steps is not supported; give a learning rate explicitly")
        base = _positive(_field(msg, "learning_rate_base", 0.002), f"{kind}.learning_rate_base")
        warmup_lr = float(_field(msg, "warmup_learning_rate", 0.0002))
        if warmup_lr > base:
            raise ConfigError(f"{where}: warmup_learning_rate ({warmup_lr}) is above learning_rate_base ({base})")
        total = max(1, scaled(_field(msg, "total_steps", 4_000_000)))
        return warmup_cosine_decay(base, total, scaled(_field(msg, "warmup_steps", 10_000)), warmup_lr)
    if kind == "exponential_decay_learning_rate":
        if int(_field(msg, "burnin_steps", 0)) or float(_field(msg, "min_learning_rate", 0.0)):
            raise ConfigError(f"{where}: burnin_steps and min_learning_rate are not supported; "
                              "give a learning rate explicitly")
        return keras.optimizers.schedules.ExponentialDecay(
            _positive(_field(msg, "initial_learning_rate", 0.002), f"{kind}.initial_learning_rate"),
            decay_steps=max(1, scaled(_field(msg, "decay_steps", 4_000_000))),
            decay_rate=float(_field(msg, "decay_factor", 0.95)), staircase=bool(_field(msg, "staircase", True)))
    # manual_step_learning_rate
    if bool(_field(msg, "warmup", False)):
        raise ConfigError(f"{where}: warmup is not supported; give a learning rate explicitly")
    initial = _positive(_field(msg, "initial_learning_rate", 0.002), f"{kind}.initial_learning_rate")
    points = sorted((int(p["step"]), float(p["learning_rate"])) for p in msg.all("schedule"))
    if not points:
        return initial
    boundaries: list[int] = []
    for step, _ in points:  # stretched boundaries stay strictly increasing and positive
        boundaries.append(max(scaled(step), boundaries[-1] + 1 if boundaries else 1))
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [initial] + [lr for _, lr in points])


def optimizer_from_config(optimizer: Message, *, steps: int | None = None,
                          num_steps: int | None = None) -> keras.optimizers.Optimizer:
    """The Keras optimizer of a ``train_config.optimizer`` message with its learning rate (see
    :func:`learning_rate_from_config`)."""
    kind, msg, _ = _learning_rate_message(optimizer)
    rate = learning_rate_from_config(optimizer, steps=steps, num_steps=num_steps)
    if kind == "momentum_optimizer":
        return keras.optimizers.SGD(learning_rate=rate, momentum=float(_field(msg, "momentum_optimizer_value", 0.9)))
    if kind == "adam_optimizer":
        return keras.optimizers.Adam(learning_rate=rate, epsilon=float(_field(msg, "epsilon", 1e-8)))
    return keras.optimizers.RMSprop(learning_rate=rate, rho=float(_field(msg, "decay", 0.9)),
                                    momentum=float(_field(msg, "momentum_optimizer_value", 0.9)),
                                    epsilon=float(_field(msg, "epsilon", 1.0)))
