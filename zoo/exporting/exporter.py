"""``zoo.export``: a loaded model (or a name / folder) -> a SavedModel or TFLite folder.

``format="saved_model"`` writes the zoo layout (``checkpoint/`` with the zoo's key layout,
``saved_model/`` with the zoo's ``serving_default`` signature, ``pipeline.config``,
``label_map.pbtxt``) for every family odzoo implements; the folder loads back with
``zoo.load(folder)`` (strict restore) and ``zoo.load(folder, backend="saved_model")``.

``format="tflite"`` writes ``model.tflite`` (post-processing inside, see
:mod:`zoo.exporting.tflite_graphs`), ``pipeline.config``, ``label_map.pbtxt`` and ``export.json``; it
loads back with ``zoo.load(folder)`` (which picks ``backend="tflite"`` for it). ``quantize``: ``none`` (float32),
``float16``, ``dynamic`` or ``int8`` (needs ``calibration``, a folder of representative images).

Every argument is checked before the model is loaded or converted, and the folder appears only
once complete (see :mod:`zoo.exporting.output_folder`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .output_folder import check_output_folder, staged_folder
from .tflite_convert import QUANTIZATIONS

__all__ = ["FORMATS", "ExportOptions", "Exported", "check_export_options", "export"]

FORMATS = ("saved_model", "tflite")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
#: calibration images used at most (the converter runs the float model once per image)
MAX_CALIBRATION_IMAGES = 100


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Checked export arguments."""

    format: str
    quantize: str
    calibration: tuple[Path, ...]
    out: Path


@dataclasses.dataclass(frozen=True)
class Exported:
    """What :func:`export` wrote."""

    folder: Path
    format: str
    quantize: str
    model: str
    files: tuple[str, ...]


def _calibration_images(folder: str | os.PathLike[str]) -> tuple[Path, ...]:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"calibration folder {path} does not exist or is not a folder")
    images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ConfigError(f"calibration folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return tuple(images[:MAX_CALIBRATION_IMAGES])


def check_export_options(
    format: str, quantize: str | None, calibration: str | os.PathLike[str] | None, out: str | os.PathLike[str] | None
) -> ExportOptions:
    """Check the arguments of an export (cheap: nothing is loaded); raises :class:`ConfigError`."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    quantize = quantize or "none"
    if quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}")
    if format == "saved_model" and quantize != "none":
        raise ConfigError(f"quantization {quantize!r} applies to TFLite only; a SavedModel is exported in float32 "
                          "(use format tflite)")
    if quantize == "int8" and calibration is None:
        raise ConfigError("int8 quantization needs calibration images (--calibration IMAGES_DIR): a folder of "
                          "images like those the model will see")
    if calibration is not None and quantize != "int8":
        raise ConfigError("calibration images are only used by int8 quantization (--quantize int8)")
    if out is None:
        raise ConfigError("give the output folder (-o DIR / out=)")
    images = _calibration_images(calibration) if calibration is not None else ()
    return ExportOptions(format, quantize, images, check_output_folder(out))


# ----------------------------------------------------------------------------- the model's facts
def _model_name(detector: Any) -> str:
    name = getattr(detector.spec, "name", None)
    if name:
        return str(name)
    if detector.model_dir is not None:
        return detector.model_dir.name
    return "model"


def _export_config(detector: Any, net: Any, config: Any) -> Any:
    """The pipeline.config describing ``net``: its class count and input size, label map path."""
    from ..models.preprocess import resizer_from_config
    from ..pipeline_config import Message, load, model_config, parse
    from .zoo_layout import updated_config

    if config is None:
        folder = detector.model_dir
        if folder is None or not (folder / "pipeline.config").is_file():
            raise ConfigError(f"{_model_name(detector)} has no model folder with a pipeline.config; pass config=")
        config = folder / "pipeline.config"
    cfg = config if isinstance(config, Message) else (parse(config) if isinstance(config, str) and "{" in config
                                                      else load(config))
    _, msg = model_config(cfg)
    input_size = None
    resizer = getattr(net, "resizer", None)
    if resizer is not None and resizer_from_config(msg["image_resizer"]) != resizer:
        if resizer.kind == "fixed_shape":
            input_size = (resizer.height, resizer.width)
        elif resizer.pad_to_max_dimension and resizer.min_dimension == resizer.max_dimension:
            input_size = (resizer.max_dimension, resizer.max_dimension)
        else:
            raise ConfigError(f"the model's image resizer {resizer} cannot be written to its pipeline.config")
    return updated_config(cfg, num_classes=int(net.num_classes), input_size=input_size)


def _export_labels(detector: Any, net: Any) -> dict[int, str]:
    from ..labels import COCO_LABELS

    labels: Mapping[int, str] = detector.label_map if detector.label_map is not None else COCO_LABELS
    k = int(net.num_classes)
    named = {int(i): str(n) for i, n in labels.items() if 1 <= int(i) <= k}
    return named or {i: f"class_{i}" for i in range(1, k + 1)}


# ----------------------------------------------------------------------------- export
def _registry_facts(model: Any) -> tuple[str | None, str]:
    """``(meta-architecture or None, name)`` of a model given by name, without loading it."""
    from ..detector import Detector

    if isinstance(model, Detector):
        return getattr(model.spec, "meta_architecture", None), _model_name(model)
    from ..errors import ZooError
    from ..loading import resolve_spec

    try:
        spec, _ = resolve_spec(model)
    except ZooError:  # an unknown name fails later, with the loader's own message
        spec = None
    return getattr(spec, "meta_architecture", None), str(getattr(spec, "name", None) or model)


def _as_detector(model: Any, load_kwargs: Mapping[str, Any]) -> Any:
    from ..detector import Detector

    if isinstance(model, Detector):
        return model
    from ..loading import load

    return load(model, backend="keras", **dict(load_kwargs))


def export(
    model: Any,
    format: str = "saved_model",
    *,
    out: str | os.PathLike[str] | None = None,
    quantize: str = "none",
    calibration: str | os.PathLike[str] | None = None,
    config: Any = None,
    **load_kwargs: Any,
) -> Exported:
    """Export ``model`` (a Keras :class:`~zoo.detector.Detector`, or a registry name, archive or
    folder loaded with ``backend="keras"`` and ``load_kwargs``) into the new folder ``out``.

    ``format``: ``"saved_model"`` or ``"tflite"``; ``quantize`` (TFLite): ``"none"``, ``"float16"``,
    ``"dynamic"`` or ``"int8"`` with ``calibration`` (a folder of images). ``config``: the
    pipeline.config the model was built from, when its detector has no model folder.
    Raises :class:`~zoo.errors.ConfigError` for bad arguments and
    :class:`~zoo.errors.UnsupportedModelError` for a model the format cannot take, both before any
    work; the output folder is written completely or not at all.
    """
    from ..images import load_image
    from .tflite_graphs import check_tflite_architecture, check_tflite_support
    from .zoo_layout import network_of

    options = check_export_options(format, quantize, calibration, out)
    if options.format == "tflite":
        check_tflite_architecture(*_registry_facts(model))
    calibration_images = [load_image(path) for path in options.calibration]  # unreadable files fail here
    detector = _as_detector(model, load_kwargs)
    net = network_of(detector)
    name = _model_name(detector)
    if options.format == "tflite":
        check_tflite_support(net, name)
    cfg = _export_config(detector, net, config)
    labels = _export_labels(detector, net)
    with staged_folder(options.out) as stage:
        files = _write(stage, options, net, cfg, labels, name, calibration_images)
    return Exported(options.out, options.format, options.quantize, name, tuple(files))


def _write(stage: Path, options: ExportOptions, net: Any, cfg: Any, labels: Mapping[int, str], name: str,
           calibration_images: list[Any]) -> list[str]:
    from .zoo_layout import (
        config_to_text,
        write_checkpoint,
        write_label_map,
        write_saved_model,
    )

    (stage / "pipeline.config").write_text(config_to_text(cfg) + "\n", encoding="utf-8")
    write_label_map(labels, stage / "label_map.pbtxt")
    facts: dict[str, Any] = {"format": options.format, "source_model": name, "num_classes": int(net.num_classes)}
    if options.format == "saved_model":
        write_checkpoint(net.checkpoint_map(), stage / "checkpoint")
        write_saved_model(net, stage / "saved_model")
    else:
        from .tflite_convert import convert
        from .tflite_graphs import input_size

        data, keys = convert(net, quantize=options.quantize, calibration=calibration_images, name=name)
        (stage / "model.tflite").write_bytes(data)
        height, width = input_size(net.resizer)
        facts.update(quantize=options.quantize, outputs=keys, calibration_images=len(calibration_images),
                     inputs={"images": [1, height, width, 3], "true_shapes": [1, 3]})
    (stage / "export.json").write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    return sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
