"""The seam between a meta-architecture and the rest of odzoo (backends, restore, fine-tuning, export)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

__all__ = ["MetaArchitecture"]


@runtime_checkable
class MetaArchitecture(Protocol):
    """What every model :func:`zoo.models.builder.build_model` returns offers.

    ``checkpoint_map()`` keys every variable by its full checkpoint key (without
    ``/.ATTRIBUTES/VARIABLE_VALUE``) for :func:`zoo.checkpoint.restore`; ``class_dependent_keys()`` are
    the keys whose shape follows ``num_classes`` (skipped when fine-tuning to other classes). The
    three stages are the original's: ``preprocess`` (uint8/float RGB ``[B,H,W,3]`` -> network input
    and true image shapes ``[B,3]``), ``predict`` (raw predictions) and ``postprocess`` (detections:
    normalized boxes, 0-based classes); calling the model runs all three.
    """

    keras_model: keras.Model

    @property
    def num_classes(self) -> int: ...

    def checkpoint_map(self) -> dict[str, keras.Variable]: ...

    def class_dependent_keys(self) -> list[str]: ...

    def preprocess(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]: ...

    def predict(self, preprocessed: tf.Tensor, *args: Any, **kwargs: Any) -> dict[str, Any]: ...

    def postprocess(self, predictions: dict[str, Any], true_shapes: tf.Tensor) -> dict[str, tf.Tensor]: ...

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]: ...
