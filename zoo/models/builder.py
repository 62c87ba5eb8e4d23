"""pipeline.config -> a Keras model of ours.

The ``model { <meta-architecture> { ... } }`` block picks the builder registered for it
(:mod:`zoo.models.registry`); each meta-architecture module reads its own block. Every model
satisfies :class:`~zoo.models.protocols.MetaArchitecture`. A meta-architecture or feature extractor
without an implementation raises :class:`~zoo.errors.UnsupportedModelError` pointing at
``backend="saved_model"``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import UnsupportedModelError
from ..pipeline_config import Message, load, model_config
from . import registry

if TYPE_CHECKING:  # pragma: no cover
    from .protocols import MetaArchitecture

__all__ = ["build_model", "supported_meta_architectures"]


def supported_meta_architectures() -> list[str]:
    """Meta-architectures with a Keras implementation."""
    return registry.meta_architectures()


def build_model(
    config: Message | str | os.PathLike[str],
    *,
    num_classes: int | None = None,
    label_map: Mapping[int, str] | None = None,
) -> MetaArchitecture:
    """Build the model a pipeline.config describes (weights freshly initialised).

    ``num_classes`` overrides the config's class count (class-dependent head layers change shape).
    ``label_map`` (label id -> name) resolves keypoint class names; COCO by default.
    """
    cfg = config if isinstance(config, Message) else load(config)
    arch, msg = model_config(cfg)
    builder = registry.meta_architecture(arch)
    if builder is None:
        known = ", ".join(supported_meta_architectures())
        raise UnsupportedModelError(
            f"meta-architecture {arch!r} has no Keras implementation in odzoo (implemented: {known}); "
            "load it with backend='saved_model' to run the archive's exported SavedModel"
        )
    return builder(msg, num_classes=num_classes, label_map=label_map)  # type: ignore[return-value]
