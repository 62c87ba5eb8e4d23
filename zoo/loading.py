"""``zoo.load``: registry name (or URL / archive / folder) -> cached model folder -> ``Detector``.

``backend="keras"`` builds our Keras model from the folder's ``pipeline.config`` and restores
``checkpoint/ckpt-0`` strictly (see :mod:`zoo.checkpoint`); ``"saved_model"`` runs the archive's
exported SavedModel; ``"hub"`` loads the registry's TF Hub handle (or ``hub_handle``).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import BACKENDS
from .checkpoint import VALUE_SUFFIX
from .detector import Detector
from .errors import (
    ConfigError,
    IntegrityError,
    NotCachedError,
    UnknownModelError,
    UnsupportedModelError,
)
from .model_ref import parse_model_ref

if TYPE_CHECKING:
    from .registry import ModelSpec

__all__ = ["build_keras_detector", "default_backend", "load", "resolve_spec"]


def resolve_spec(name_or_source: Any) -> tuple[ModelSpec | None, Any]:
    """``(spec or None, source for zoo.hub.fetch)``: a registry entry if the name is known."""
    ref = parse_model_ref(name_or_source)
    return ref.spec, ref.source


def _model_folder(source: Any, *, cache_dir: Any, offline: bool | None, progress: bool | None, force: bool) -> Path:
    if isinstance(source, Path) and source.is_dir():
        return source
    if isinstance(source, str) and Path(source).is_dir():
        return Path(source)
    from .hub import fetch

    return Path(fetch(source, cache_dir=cache_dir, offline=offline, progress=progress, force=force))


def _spec_for_folder(folder: Path) -> Any:
    """The registry entry named like the model folder (zoo archives are named after their model)."""
    from .registry import get

    try:
        return get(folder.name)
    except UnknownModelError:
        return None


def _label_map(spec: Any, label_map: Mapping[int, str] | None, folder: Path | None = None) -> Mapping[int, str] | None:
    """Class names: those given, else the folder's ``label_map.pbtxt`` (exported and fine-tuned
    models carry one), else the registry entry's."""
    if label_map is not None:
        return dict(label_map)
    if folder is not None and (folder / "label_map.pbtxt").is_file():
        from .labels import read_label_map

        return read_label_map(folder / "label_map.pbtxt")
    return getattr(spec, "label_map", None) if spec is not None else None


def build_keras_detector(
    folder: Path,
    *,
    spec: Any = None,
    strict: bool = True,
    num_classes: int | None = None,
    label_map: Mapping[int, str] | None = None,
    jit_compile: bool = False,
    restore_checkpoint: bool = True,
    precision: str = "float32",
    trace_cache: str | os.PathLike[str] | None = None,
) -> Detector:
    """Build our Keras model from ``folder/pipeline.config`` and restore ``folder/checkpoint``.

    ``trace_cache``: a cache root whose stored traced graphs may stand in for building and tracing
    (:mod:`zoo.backends.stored_trace`); None: build as usual and store nothing.
    Raises :class:`~zoo.errors.UnsupportedModelError` (suggesting ``backend="saved_model"``) when the
    meta-architecture or its feature extractor has no Keras implementation.
    """
    from .pipeline_config import load as load_config
    from .pipeline_config import model_config

    config_path = folder / "pipeline.config"
    if not config_path.is_file():
        raise NotCachedError(f"{folder} has no pipeline.config; is it a zoo model folder?")
    cfg = load_config(config_path)
    _, msg = model_config(cfg)
    labels = _label_map(spec, label_map, folder)
    configured = int(msg.get("num_classes", 0))
    changed = num_classes is not None and int(num_classes) != configured

    def build() -> Any:
        return _build_keras_backend(
            cfg, folder, strict=strict, num_classes=num_classes, labels=labels, configured=configured,
            jit_compile=jit_compile, restore_checkpoint=restore_checkpoint, precision=precision,
        )

    store = key = graph = None
    if trace_cache is not None and restore_checkpoint and not changed and not jit_compile:
        store, key, graph = _stored_trace(Path(trace_cache), folder, labels, precision)
    if graph is not None:
        from .backends.stored_trace import StoredTraceBackend

        return Detector(StoredTraceBackend(graph, lambda: build()[0], precision), spec=spec, model_dir=folder,
                        label_map=labels, restore_report=graph.report)
    backend, report = build()
    if store is not None and report is not None and report.ok and not report.skipped:
        backend.on_first_trace = functools.partial(_store_trace, store, key, report, folder)
    return Detector(
        backend,
        spec=spec,
        model_dir=folder,
        label_map={} if changed and label_map is None else labels,  # new classes: ids read as "class_<id>"
        restore_report=report,
    )


def _build_keras_backend(
    cfg: Any, folder: Path, *, strict: bool, num_classes: int | None, labels: Mapping[int, str] | None,
    configured: int, jit_compile: bool, restore_checkpoint: bool, precision: str,
) -> tuple[Any, Any]:
    """``(KerasBackend, restore report or None)``: the model built from ``cfg`` and restored from ``folder``."""
    from .backends.keras_backend import KerasBackend
    from .checkpoint import restore
    from .models.builder import build_model

    net = build_model(cfg, num_classes=num_classes, label_map=labels)
    report = None
    if restore_checkpoint:
        skip: dict[str, str] = {}
        if num_classes is not None and int(num_classes) != configured:
            reason = f"num_classes={num_classes} differs from the checkpoint's {configured}: re-initialised"
            skip = {key: reason for key in net.class_dependent_keys()}
        report = restore(
            net.checkpoint_map(), folder / "checkpoint", strict=strict, model_variables=net.keras_model.weights, skip=skip
        )
    return KerasBackend(net, jit_compile=jit_compile, precision=precision), report


def _stored_trace(root: Path, folder: Path, labels: Mapping[int, str] | None,
                  precision: str) -> tuple[Any, str | None, Any]:
    """``(store, key, stored graph)`` for ``folder``: the graph None when there is none yet, all three
    None when the store cannot be used."""
    from . import settings
    from .checkpoint import checkpoint_prefix

    if not settings.trace_cache():
        return None, None, None
    from .backends.stored_trace import TraceStore

    try:
        prefix = checkpoint_prefix(folder / "checkpoint")
    except NotCachedError:
        return None, None, None  # the ordinary path reports it
    store = TraceStore(root)
    options = {"labels": sorted((labels or {}).items()), "precision": precision}
    key = store.key(folder, prefix, options)
    if key is None:
        return None, None, None
    return store, key, store.load(key, prefix)


def _store_trace(store: Any, key: str, report: Any, folder: Path, backend: Any) -> None:
    """Write ``backend``'s traced graph to the store, each variable input named by its checkpoint key.
    Runs inside the first ``detect()``: a failure is logged at debug level, never raised."""
    import dataclasses
    import logging

    import keras

    try:
        variable_keys = {}
        for name, var in backend.net.checkpoint_map().items():
            tf_var = var.value if isinstance(var, keras.Variable) else var
            variable_keys[id(tf_var.handle)] = (name.removesuffix(VALUE_SUFFIX), [int(d) for d in var.shape])
        store.save(key, backend.concrete_function, variable_keys, dataclasses.asdict(report), folder)
    except Exception as exc:  # noqa: BLE001 - storing is an optimisation; the detection already succeeded
        logging.getLogger(__name__).debug("traced graph of %s not stored: %s", folder, exc)


def load(
    name_or_source: Any,
    *,
    backend: str | None = None,
    strict: bool = True,
    num_classes: int | None = None,
    label_map: Mapping[int, str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    progress: bool | None = None,
    force: bool = False,
    jit_compile: bool = False,
    hub_handle: str | None = None,
    precision: str = "float32",
) -> Detector:
    """Load a detector.

    ``name_or_source``: registry name or alias, ``ModelSpec``, http(s)/file URL, local ``.tar.gz`` or
    model folder. ``backend``: ``"keras"`` (our Keras model: CenterNet, SSD / EfficientDet /
    RetinaNet, Faster / Mask R-CNN), ``"saved_model"`` (any zoo
    model with an export), ``"hub"`` or ``"tflite"`` (a folder written by ``odzoo export --format
    tflite``); None (default): ``"tflite"`` for such a folder, ``"keras"`` for everything else. Class names: ``label_map``, else the folder's ``label_map.pbtxt``, else the registry's.
    ``strict``: a checkpoint that does not match the model exactly raises
    :class:`~zoo.errors.CheckpointMismatchError`; with ``strict=False`` the report
    (``Detector.restore_report``) lists what was left. ``num_classes``: a class count different from
    the checkpoint's re-initialises the class-dependent head layers and restores everything else.
    ``jit_compile`` (keras backend): compile the detection graph with XLA. ``precision`` (keras
    backend): ``"float16"`` / ``"bfloat16"`` run the network's convolutions in that dtype (for GPUs and
    TPUs; detections move slightly, see :func:`zoo.agreement.detection_agreement`).
    """
    if backend is None:
        backend = default_backend(name_or_source)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"precision must be float32, float16 or bfloat16, got {precision!r}")
    if precision != "float32" and backend != "keras":
        raise ConfigError(f"precision={precision!r} needs backend='keras' (the {backend} backend runs as exported)")
    spec, source = resolve_spec(name_or_source)
    if backend == "keras" and spec is not None and spec.meta_architecture is not None:
        from .models.builder import supported_meta_architectures

        if spec.meta_architecture not in supported_meta_architectures():
            raise UnsupportedModelError(
                f"{spec.name}: meta-architecture {spec.meta_architecture!r} has no Keras implementation in odzoo; "
                "use zoo.load(..., backend='saved_model') to run its exported SavedModel"
            )
    if backend == "hub":
        from .backends.hub_backend import HubBackend

        handle = hub_handle or (getattr(spec, "tfhub", None) if spec is not None else None)
        if handle is None and spec is None:
            handle = str(source)
        if handle is None:
            raise UnsupportedModelError(
                f"{spec.name} has no TF Hub handle in the registry; pass hub_handle= or use backend='saved_model'"
            )
        return Detector(HubBackend(handle), spec=spec, model_dir=None, label_map=_label_map(spec, label_map))
    folder = _model_folder(source, cache_dir=cache_dir, offline=offline, progress=progress, force=force)
    if spec is None:
        spec = _spec_for_folder(folder)
    given_folder = isinstance(source, (str, os.PathLike)) and Path(source).is_dir()
    with _damage_reported(folder, cache_entry=not given_folder):
        if backend == "saved_model":
            from .backends.saved_model_backend import SavedModelBackend

            return Detector(SavedModelBackend(folder), spec=spec, model_dir=folder,
                            label_map=_label_map(spec, label_map, folder))
        if backend == "tflite":
            from .backends.tflite_backend import TFLiteBackend

            return Detector(TFLiteBackend(folder), spec=spec, model_dir=folder,
                            label_map=_label_map(spec, label_map, folder))
        return build_keras_detector(
            folder, spec=spec, strict=strict, num_classes=num_classes, label_map=label_map, jit_compile=jit_compile,
            precision=precision, trace_cache=_trace_cache_root(cache_dir),
        )


def _trace_cache_root(cache_dir: str | os.PathLike[str] | None) -> Path | None:
    """The cache root whose ``traces`` folder the keras backend may use (None if there is none)."""
    from .errors import CacheError
    from .hub.config import cache_dir as configured_cache

    try:
        return Path(cache_dir).expanduser() if cache_dir else configured_cache()
    except CacheError:
        return None


def default_backend(name_or_source: Any) -> str:
    """``"tflite"`` for a folder holding an exported ``model.tflite`` (nothing else runs it), else ``"keras"``."""
    if isinstance(name_or_source, (str, os.PathLike)):
        from .backends.tflite_backend import MODEL_FILE

        folder = Path(name_or_source).expanduser()
        if (folder / MODEL_FILE).is_file() and not (folder / "checkpoint").is_dir():
            return "tflite"
    return "keras"


@contextmanager
def _damage_reported(folder: Path, *, cache_entry: bool) -> Iterator[None]:
    """Turn a failed load from a cache entry whose files no longer match its manifest (bit rot the
    cheap load check cannot see) into IntegrityError naming the entry and the repair command. A
    folder the user gave is theirs to edit: its errors pass through unchanged."""
    try:
        yield
    except Exception as exc:
        from .hub.cache import MANIFEST_NAME, full_verify

        if not cache_entry or not (folder / MANIFEST_NAME).is_file():
            raise  # not a cache entry: nothing to compare with
        report = full_verify(folder)
        if report.ok:
            raise
        raise IntegrityError(
            f"the cached model {folder.name} is damaged ({report.problems()}) in {folder}; "
            f"run `odzoo cache verify {folder.name}` to repair it"
        ) from exc
