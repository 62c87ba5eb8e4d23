"""Which code implements which part of a pipeline.config: one registry for every meta-architecture.

A meta-architecture module registers the builder of its ``model { <name> { ... } }`` block::

    @register_meta_architecture("ssd")
    def build_ssd(msg, *, num_classes=None, label_map=None) -> SSD: ...

and a feature extractor module registers its factory under every ``feature_extractor.type`` it
implements, for the meta-architecture that calls it::

    @register_feature_extractor("ssd_mobilenet_v2_fpn_keras", meta="ssd")
    def create(config, hyperparams) -> SsdMobileNetV2Fpn: ...

What a factory receives and returns is the meta-architecture's contract (see its module). Modules
are imported on the first lookup: the meta-architectures from :data:`META_ARCHITECTURE_MODULES`,
the feature extractors from every module of ``zoo.models.backbones.<package>``, so ``import zoo``
stays free of TensorFlow and adding a model needs no table edited here.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TypeVar

from ..errors import UnsupportedModelError

__all__ = [
    "META_ARCHITECTURE_MODULES",
    "feature_extractor",
    "feature_extractors",
    "meta_architecture",
    "meta_architectures",
    "register_feature_extractor",
    "register_meta_architecture",
]

F = TypeVar("F", bound=Callable[..., object])

# meta-architecture (the pipeline.config's model oneof) -> (module, display name). The module
# ``zoo.models.<module>`` registers the builder; the package ``zoo.models.backbones.<module>`` holds the
# feature extractors.
META_ARCHITECTURE_MODULES: dict[str, tuple[str, str]] = {
    "center_net": ("centernet", "CenterNet"),
    "ssd": ("ssd", "SSD"),
    "faster_rcnn": ("faster_rcnn", "Faster R-CNN"),
}

_BUILDERS: dict[str, Callable[..., object]] = {}
_EXTRACTORS: dict[str, dict[str, Callable[..., object]]] = {}
_LOADED: set[str] = set()


def register_meta_architecture(name: str) -> Callable[[F], F]:
    """Decorator: make the function the builder of ``model { <name> { ... } }``."""

    def register(builder: F) -> F:
        _BUILDERS[name] = builder
        return builder

    return register


def register_feature_extractor(*types: str, meta: str) -> Callable[[F], F]:
    """Decorator: make the factory the implementation of ``feature_extractor.type`` ``types`` under
    meta-architecture ``meta`` (replacing an earlier one)."""
    if meta not in META_ARCHITECTURE_MODULES:
        raise ValueError(f"unknown meta-architecture {meta!r} (known: {', '.join(META_ARCHITECTURE_MODULES)})")

    def register(factory: F) -> F:
        for kind in types:
            _EXTRACTORS.setdefault(meta, {})[str(kind)] = factory
        return factory

    return register


def meta_architecture(name: str) -> Callable[..., object] | None:
    """The builder registered for meta-architecture ``name`` (None when there is none)."""
    if name not in _BUILDERS and name in META_ARCHITECTURE_MODULES:
        importlib.import_module(f"{__package__}.{META_ARCHITECTURE_MODULES[name][0]}")
    return _BUILDERS.get(name)


def meta_architectures() -> list[str]:
    """Meta-architectures with a Keras implementation."""
    return sorted(name for name in META_ARCHITECTURE_MODULES if meta_architecture(name) is not None) + sorted(
        name for name in _BUILDERS if name not in META_ARCHITECTURE_MODULES
    )


def _load_backbones(meta: str) -> None:
    if meta in _LOADED:
        return
    package = importlib.import_module(f"{__package__}.backbones.{META_ARCHITECTURE_MODULES[meta][0]}")
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    _LOADED.add(meta)


def feature_extractors(meta: str) -> list[str]:
    """Every ``feature_extractor.type`` implemented for meta-architecture ``meta``."""
    _load_backbones(meta)
    return sorted(_EXTRACTORS.get(meta, {}))


def feature_extractor(meta: str, kind: str) -> Callable[..., object]:
    """The factory of ``feature_extractor.type`` ``kind`` under ``meta``; a clear
    :class:`~zoo.errors.UnsupportedModelError` when odzoo has none."""
    factory = _EXTRACTORS.get(meta, {}).get(kind)
    if factory is None:
        _load_backbones(meta)
        factory = _EXTRACTORS.get(meta, {}).get(kind)
    if factory is None:
        known = ", ".join(feature_extractors(meta)) or "none"
        raise UnsupportedModelError(
            f"{META_ARCHITECTURE_MODULES[meta][1]} feature extractor {kind!r} has no Keras implementation "
            f"(implemented: {known}); load the model with backend='saved_model' to run the archive's exported "
            "SavedModel instead"
        )
    return factory
