"""Strict restore of TF2 object-based checkpoints into Keras 3 variables.

Keras 3 functional models do not line up with the Keras 2 object graph the zoo checkpoints were
written from, so nothing here relies on ``tf.train.Checkpoint`` matching. Instead the checkpoint's
keys are read explicitly (``tf.train.load_checkpoint``) and each model supplies a *variable map*:
checkpoint key (without ``/.ATTRIBUTES/VARIABLE_VALUE``) -> ``keras.Variable``.

A strict restore requires every checkpoint variable to be consumed (``save_counter`` and the object
graph excepted; optimizer state is reported separately), every model variable to be assigned, and
every shape to agree. Everything is checked before anything is assigned, so a failed restore leaves
the model untouched.
"""
from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Union

from .errors import CheckpointMismatchError, NotCachedError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

Variable = Union["keras.Variable", "tf.Variable"]
"""What a variable map holds: a Keras 3 variable (or a plain TensorFlow one)."""

__all__ = [
    "VALUE_SUFFIX",
    "RestoreReport",
    "checkpoint_prefix",
    "match_variables",
    "read_checkpoint_keys",
    "restore",
]

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_BOOKKEEPING = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter")


@dataclasses.dataclass
class RestoreReport:
    """What a restore did. Keys are checkpoint keys without the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix."""

    checkpoint: str
    matched: list[str] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    """Model variables with no value in the checkpoint (mapped key, or the variable's path if unmapped)."""
    unexpected: list[str] = dataclasses.field(default_factory=list)
    """Checkpoint variables that no model variable consumed."""
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(default_factory=list)
    """``(key, checkpoint shape, model shape)``."""
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    """Keys left at their initial value on request, with the reason."""
    optimizer: list[str] = dataclasses.field(default_factory=list)
    """Optimizer slots and state found in the checkpoint (never restored into the model)."""
    ignored: list[str] = dataclasses.field(default_factory=list)
    """Bookkeeping entries (save counter, object graph)."""
    assigned: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected or mis-shaped (skips by request are fine)."""
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def summary(self) -> str:
        """One readable report; unmatched keys grouped by subtree."""
        lines = [
            f"checkpoint {self.checkpoint}: {len(self.matched)} variables restored, "
            f"{len(self.missing)} model variables missing, {len(self.unexpected)} checkpoint variables "
            f"unexpected, {len(self.shape_mismatches)} shape mismatches, {len(self.skipped)} skipped by request"
            + (f", {len(self.optimizer)} optimizer entries ignored" if self.optimizer else "")
        ]
        if self.missing:
            lines.append("  missing from the checkpoint (model variables left unassigned):")
            lines += _grouped(self.missing)
        if self.unexpected:
            lines.append("  not consumed by the model (checkpoint variables without a model variable):")
            lines += _grouped(self.unexpected)
        if self.shape_mismatches:
            lines.append("  shape mismatches (checkpoint vs model):")
            for key, ck, mine in self.shape_mismatches[:20]:
                lines.append(f"    {key}: {list(ck)} vs {list(mine)}")
            if len(self.shape_mismatches) > 20:
                lines.append(f"    ... and {len(self.shape_mismatches) - 20} more")
        if self.skipped:
            lines.append("  skipped by request (left at their initial values):")
            for key, why in sorted(self.skipped.items()):
                lines.append(f"    {key}: {why}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _subtree(key: str) -> str:
    """Group keys by the path up to their numbered layer: 'a/b/layer_with_weights-3/kernel' -> 'a/b'."""
    parts = key.split("/")
    for i, part in enumerate(parts):
        if part.startswith(("layer_with_weights-", "layer-")):
            return "/".join(parts[:i]) or part
    return "/".join(parts[:-1]) or key


def _grouped(keys: Iterable[str], per_group: int = 4) -> list[str]:
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        groups[_subtree(key)].append(key)
    out = []
    for group, members in sorted(groups.items()):
        shown = ", ".join(m[len(group) + 1 :] if m.startswith(group + "/") else m for m in members[:per_group])
        more = f", ... (+{len(members) - per_group})" if len(members) > per_group else ""
        out.append(f"    {group}/ ({len(members)}): {shown}{more}")
    return out


def checkpoint_prefix(path: str | os.PathLike[str]) -> str:
    """Resolve a checkpoint folder, ``checkpoint`` state file, or prefix to the prefix (``.../ckpt-0``)."""
    import tensorflow as tf

    p = Path(path)
    if p.is_dir():
        latest = tf.train.latest_checkpoint(str(p))
        if latest:
            return latest
        if (p / "checkpoint").is_dir():
            return checkpoint_prefix(p / "checkpoint")
        indexes = sorted(p.glob("*.index"))
        if len(indexes) == 1:
            return str(indexes[0].with_suffix(""))
        raise NotCachedError(f"no checkpoint found in {p} (expected ckpt-0.index and ckpt-0.data-*)")
    if p.name.endswith(".index"):
        return str(p.with_suffix(""))
    if Path(str(p) + ".index").is_file():
        return str(p)
    raise NotCachedError(f"checkpoint {p} does not exist (expected {p}.index and {p}.data-*)")


def read_checkpoint_keys(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Every variable of a checkpoint: full key -> shape (bookkeeping included)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(checkpoint_prefix(path))
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointMismatchError(f"cannot read checkpoint {path}: {exc}") from exc
    return {k: tuple(int(d) for d in s) for k, s in reader.get_variable_to_shape_map().items()}


def _strip(key: str) -> str:
    return key.removesuffix(VALUE_SUFFIX)


def _is_optimizer(key: str) -> bool:
    return "/.OPTIMIZER_SLOT/" in key or key.startswith(("optimizer/", "optimizer."))


def match_variables(
    variable_map: Mapping[str, Variable],
    checkpoint_shapes: Mapping[str, Iterable[int]],
    *,
    model_variables: Iterable[Variable] | None = None,
    skip: Mapping[str, str] | None = None,
    checkpoint: str = "<checkpoint>",
) -> tuple[RestoreReport, list[tuple[str, Variable]]]:
    """Match a variable map against checkpoint keys/shapes without reading or assigning values.

    Returns the report (nothing assigned yet) and the ``(key, variable)`` pairs a restore would
    assign. :func:`restore` is this plus the values; tests use it with a checkpoint manifest.
    """
    shapes = {_strip(k): tuple(int(d) for d in s) for k, s in checkpoint_shapes.items()}
    wanted = {_strip(k): v for k, v in variable_map.items()}
    skip = {_strip(k): why for k, why in (skip or {}).items()}

    report = RestoreReport(checkpoint=checkpoint)
    for key in shapes:
        if key.split("/")[0] in _BOOKKEEPING:
            report.ignored.append(key)
        elif _is_optimizer(key):
            report.optimizer.append(key)

    consumed = set(report.ignored) | set(report.optimizer)
    plan: list[tuple[str, Variable]] = []
    for key, var in wanted.items():
        if key in skip:
            report.skipped[key] = skip[key]
            consumed.add(key)
            continue
        if key not in shapes:
            report.missing.append(key)
            continue
        consumed.add(key)
        mine = tuple(int(d) for d in var.shape)
        if shapes[key] != mine:
            report.shape_mismatches.append((key, shapes[key], mine))
            continue
        plan.append((key, var))
    for key in skip:
        if key in shapes and key not in wanted:
            report.skipped[key] = skip[key]
            consumed.add(key)
    report.unexpected = sorted(k for k in shapes if k not in consumed)

    if model_variables is not None:
        mapped = {id(v) for v in wanted.values()}
        for var in model_variables:
            if id(var) not in mapped:
                report.missing.append(f"<unmapped model variable> {getattr(var, 'path', None) or var.name}")
    report.missing.sort()
    return report, plan


def restore(
    variable_map: Mapping[str, Variable],
    checkpoint: str | os.PathLike[str],
    *,
    strict: bool = True,
    model_variables: Iterable[Variable] | None = None,
    skip: Mapping[str, str] | None = None,
) -> RestoreReport:
    """Assign checkpoint values to the variables of ``variable_map``.

    ``variable_map``: checkpoint key (with or without the ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix) ->
    Keras (or tf) variable. ``model_variables``: every variable of the model; any of them absent
    from the map counts as missing. ``skip``: key -> reason; those keys are neither restored nor
    reported as missing/unexpected (used to re-initialise class-dependent layers).
    With ``strict=True`` any missing, unexpected or mis-shaped entry raises
    :class:`CheckpointMismatchError` carrying the full report, before any assignment. With
    ``strict=False`` everything that matches is assigned and the report says what was left.
    """
    import tensorflow as tf

    prefix = checkpoint_prefix(checkpoint)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as exc:
        raise CheckpointMismatchError(f"cannot read checkpoint {prefix}: {exc}") from exc
    stored = reader.get_variable_to_shape_map()
    full_keys = {_strip(k): k for k in stored}
    report, plan = match_variables(
        variable_map, stored, model_variables=model_variables, skip=skip, checkpoint=prefix
    )
    if strict and not report.ok:
        error = CheckpointMismatchError("strict restore failed; the model was left untouched.\n" + report.summary())
        error.report = report  # type: ignore[attr-defined]
        raise error

    for key, var in plan:
        value = reader.get_tensor(full_keys[key])
        var.assign(value)
        report.matched.append(key)
    report.matched.sort()
    report.assigned = True
    return report
