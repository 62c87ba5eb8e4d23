"""odzoo: the TF2 Detection Model Zoo, one line away, on current TensorFlow and Keras 3.

    import zoo
    det = zoo.load("centernet_resnet50")    # registry -> download -> cache -> Keras model -> restore
    result = det.detect(image)               # one Detections per image, for every model

``import zoo`` is cheap: TensorFlow is imported only when a model is built or loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import errors
from .detections import Detections
from .errors import ZooError
from .registry import ModelSpec, list_models

if TYPE_CHECKING:  # pragma: no cover
    from .detector import Detector

__all__ = [
    "Detections", "ModelSpec", "ZooError", "errors", "list_models", "info", "download", "load", "finetune", "export",
]
__version__ = "0.1.0"


def info(name: str) -> ModelSpec:
    """The immutable registry spec of a model, by canonical name or alias."""
    from .registry import get

    return get(name)


def download(name_or_source: str | ModelSpec, *, force: bool = False, progress: bool | None = None) -> Path:
    """Make a model available in the cache and return its extracted folder.

    Accepts a registry name or alias, a ``ModelSpec``, an http(s)/file URL, a local ``.tar.gz`` or a
    model folder. The folder holds ``checkpoint/``, ``pipeline.config`` and (zoo archives)
    ``saved_model/``.
    """
    from .hub import fetch
    from .registry import registry

    source: Any = name_or_source
    if isinstance(name_or_source, str) and name_or_source in registry():
        source = registry().get(name_or_source)
    return fetch(source, force=force, progress=progress)


def load(name_or_source: str | ModelSpec, **kwargs: Any) -> Detector:
    """Download (if needed), build and restore a detector. See :func:`zoo.loading.load`."""
    from .loading import load as _load

    return _load(name_or_source, **kwargs)


def finetune(*args: Any, **kwargs: Any) -> Detector:
    """Fine-tune a zoo model on a COCO-format dataset. See :func:`zoo.fine_tuning.finetune`."""
    from .fine_tuning import finetune as _finetune

    return _finetune(*args, **kwargs)


def export(model: Any, format: str = "saved_model", **kwargs: Any) -> Any:
    """Export a model as a SavedModel or TFLite folder. See :func:`zoo.exporting.exporter.export`."""
    from .exporting.exporter import export as _export

    return _export(model, format, **kwargs)
