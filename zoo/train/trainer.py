"""The training loop: tf.data batches -> a family's losses -> the pipeline's optimizer, or Adam with
warmup + cosine decay (:func:`build_optimizer`).

What a step minimises comes from an *objective* (:class:`Objective`): :class:`CenterNetObjective`
for a :class:`~zoo.models.centernet.CenterNet`, :class:`~zoo.train.ssd.objective.SsdObjective` for
an SSD-family model. Only the model's trainable variables are updated. It runs
under any ``tf.distribute`` strategy: build the model *inside* ``strategy.scope()`` and pass the same
strategy here. Periodic checkpoints of the model, the optimizer and the step go to
``out_dir/train/`` through ``tf.train.CheckpointManager``; a later run with the same ``out_dir``
resumes from the latest one.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import keras
import tensorflow as tf

from ..pipeline_config import Message
from .data import TrainingData
from .losses import LossWeights, centernet_loss
from .optimizer import optimizer_from_config, warmup_cosine_decay

#: Adam's peak learning rate when neither the caller nor the pipeline's optimizer gives one.
DEFAULT_LEARNING_RATE = 1e-3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    The optimizer: with ``pipeline_train_config`` (a ``pipeline.config``'s ``train_config``
    message) and none of ``learning_rate``, ``schedule``, ``warmup_steps`` and
    ``warmup_learning_rate`` given, the config's ``train_config.optimizer`` and learning-rate
    schedule, stretched to ``steps`` (see :mod:`zoo.train.optimizer`). Otherwise Adam: ``warmup_steps`` default to 10% of ``steps``; the
    learning rate rises linearly from ``warmup_learning_rate`` (default a quarter of
    ``learning_rate``, itself default 1e-3) and then follows a cosine to zero at ``steps``
    (``schedule="cosine"``, the default) or stays flat (``"constant"``).
    """

    steps: int
    batch_size: int = 8
    learning_rate: float | None = None
    schedule: str | None = None
    warmup_steps: int | None = None
    warmup_learning_rate: float | None = None
    clip_norm: float | None = 10.0
    checkpoint_every: int | None = None
    max_checkpoints: int = 3
    seed: int = 0
    pipeline_train_config: Message | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.schedule not in (None, "cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")

    @property
    def optimizer_from_pipeline(self) -> bool:
        """Whether the optimizer comes from ``pipeline_train_config`` (see the class docstring)."""
        explicit = (self.learning_rate, self.schedule, self.warmup_steps, self.warmup_learning_rate)
        return (self.pipeline_train_config is not None and "optimizer" in self.pipeline_train_config
                and all(value is None for value in explicit))


def learning_rate_schedule(config: TrainConfig) -> keras.optimizers.schedules.LearningRateSchedule:
    """The warmup + cosine (or constant) schedule of an explicit ``learning_rate`` / ``schedule``."""
    base = config.learning_rate if config.learning_rate is not None else DEFAULT_LEARNING_RATE
    warmup = config.warmup_steps if config.warmup_steps is not None else max(0, config.steps // 10)
    warmup_lr = config.warmup_learning_rate if config.warmup_learning_rate is not None else base / 4
    return warmup_cosine_decay(base, config.steps, warmup, warmup_lr, constant=config.schedule == "constant")


def build_optimizer(config: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimizer ``config`` asks for: the pipeline's (stretched to the run) or Adam."""
    if config.optimizer_from_pipeline:
        train = config.pipeline_train_config
        return optimizer_from_config(train["optimizer"], steps=config.steps,
                                     num_steps=int(train.get("num_steps", 0)) or None)
    return keras.optimizers.Adam(learning_rate=learning_rate_schedule(config), epsilon=1e-7)


@dataclasses.dataclass
class TrainResult:
    """What a run did: steps taken (this run), final step, mean losses per logged interval, timing."""

    steps_run: int
    final_step: int
    history: list[dict[str, float]]
    seconds: float
    checkpoints: list[str]

    @property
    def final_loss(self) -> float:
        return self.history[-1]["total"] if self.history else float("nan")


def _loss_inputs(net: Any, predictions: dict[str, list[tf.Tensor]]) -> dict[str, Any]:
    """Rename head outputs to the loss's names (``{task}/keypoint/heatmap`` -> ``keypoint/heatmap``)."""
    out = {k: v for k, v in predictions.items() if "/keypoint/" not in k}
    tasks = getattr(net.config, "keypoint_tasks", ())
    if tasks:
        task = tasks[0]
        for kind in ("heatmap", "offset", "regression"):
            if task.head(kind) in predictions:
                out[f"keypoint/{kind}"] = predictions[task.head(kind)]
    return out


class Objective(Protocol):
    """What a training step minimises for one model family."""

    def network_input(self, images: tf.Tensor) -> tf.Tensor:
        """A batch of training images (RGB 0..255 at the input size) -> the network's input."""
        ...

    def __call__(self, batch: Mapping[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        """The loss terms of ``batch`` by name, with ``total`` the one minimised."""
        ...


class CenterNetObjective:
    """The CenterNet losses (:func:`~zoo.train.losses.centernet_loss`) on batches of
    :class:`~zoo.train.data.TrainingData`."""

    def __init__(self, net: Any, weights: LossWeights | None = None) -> None:
        self.net = net
        self.weights = weights or LossWeights()

    def network_input(self, images: tf.Tensor) -> tf.Tensor:
        return self.net.backbone.preprocess(images)

    def __call__(self, batch: Mapping[str, tf.Tensor], training: bool = True) -> dict[str, tf.Tensor]:
        preds = self.net.predict(self.network_input(batch["image"]), training=training)
        return centernet_loss(_loss_inputs(self.net, preds), batch, self.weights)


class Trainer:
    """Runs :class:`TrainConfig` on a model with data from :class:`~zoo.train.data.TrainingData` (or a
    subclass) and the family's ``objective`` (default: CenterNet's, weighted by ``loss_weights``)."""

    def __init__(self, net: Any, data: TrainingData, config: TrainConfig, *,
                 loss_weights: LossWeights | None = None, objective: Objective | None = None,
                 strategy: tf.distribute.Strategy | None = None,
                 out_dir: str | os.PathLike[str] | None = None) -> None:
        self.net = net
        self.data = data
        self.config = config
        self.loss_weights = loss_weights or LossWeights()
        self.objective = objective if objective is not None else CenterNetObjective(net, self.loss_weights)
        if not net.keras_model.trainable_variables:
            raise ValueError("the model has no trainable variables; choose some to train")
        self.strategy = strategy or tf.distribute.get_strategy()
        replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % replicas:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {replicas} replicas")
        with self.strategy.scope():
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.optimizer = build_optimizer(config)
            self.optimizer.build(net.keras_model.trainable_variables)
        self.manager: tf.train.CheckpointManager | None = None
        if out_dir is not None:
            ckpt = tf.train.Checkpoint(model=net.keras_model, optimizer=self.optimizer, step=self.step)
            self.manager = tf.train.CheckpointManager(ckpt, str(Path(out_dir) / "train"),
                                                      max_to_keep=config.max_checkpoints)
            if self.manager.latest_checkpoint:
                ckpt.restore(self.manager.latest_checkpoint).expect_partial()
        self._step_fn = self._make_step()

    # ------------------------------------------------------------------ one step
    def _make_step(self) -> Any:
        objective, strategy, clip = self.objective, self.strategy, self.config.clip_norm
        replicas = float(strategy.num_replicas_in_sync)
        variables = self.net.keras_model.trainable_variables

        def replica_step(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                losses = objective(batch, training=True)
                scaled = losses["total"] / replicas
            grads = tape.gradient(scaled, variables)
            if clip:
                grads, _ = tf.clip_by_global_norm(grads, clip)
            self.optimizer.apply_gradients(zip(grads, variables))
            return losses

        @tf.function
        def step(dist_batch: Any) -> dict[str, tf.Tensor]:
            per_replica = strategy.run(replica_step, args=(dist_batch,))
            self.step.assign_add(1)
            return {k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None) for k, v in per_replica.items()}

        return step

    # ------------------------------------------------------------------ the loop
    def run(self, *, progress: bool = True, log_every: int = 10) -> TrainResult:
        """Train until ``config.steps`` (counting steps of earlier runs restored from ``out_dir``)."""
        start_step = int(self.step.numpy())
        todo = max(0, self.config.steps - start_step)
        dataset = self.data.tf_dataset(self.config.batch_size, shuffle=True, repeat=True)
        dist = iter(self.strategy.experimental_distribute_dataset(dataset))
        history: list[dict[str, float]] = []
        saved: list[str] = []
        window: dict[str, float] = {}
        count = 0
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=self.config.steps, initial=start_step, desc="finetune", unit="step", dynamic_ncols=True)
        began = time.perf_counter()
        try:
            for _ in range(todo):
                losses = self._step_fn(next(dist))
                values = {k: float(v) for k, v in losses.items()}
                if not math.isfinite(values["total"]):
                    raise FloatingPointError(
                        f"training diverged at step {int(self.step.numpy())} (loss {values['total']}); "
                        "lower the learning rate")
                for k, v in values.items():
                    window[k] = window.get(k, 0.0) + v
                count += 1
                current = int(self.step.numpy())
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['total']:.3f}")
                if count == log_every or current == self.config.steps:
                    history.append({"step": float(current), **{k: v / count for k, v in window.items()}})
                    window, count = {}, 0
                every = self.config.checkpoint_every
                if self.manager is not None and every and current % every == 0:
                    saved.append(self.manager.save(checkpoint_number=current))
        finally:
            if bar is not None:
                bar.close()
        final = int(self.step.numpy())
        if self.manager is not None and todo and (not saved or not saved[-1].endswith(f"-{final}")):
            saved.append(self.manager.save(checkpoint_number=final))
        return TrainResult(todo, final, history, time.perf_counter() - began, saved)
