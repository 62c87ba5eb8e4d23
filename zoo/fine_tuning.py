"""``zoo.finetune``: train a zoo detector of any family (CenterNet; SSD, RetinaNet, EfficientDet;
Faster R-CNN, Mask R-CNN), or a config of one, on a COCO-format dataset.

    det = zoo.finetune("centernet_mobilenetv2fpn_512x512_coco17_od", "data/annotations.json",
                       images="data/images", num_classes=3, steps=2000, out_dir="runs/shapes")
    # few-shot: a RetinaNet whose backbone, FPN, towers and box head are kept; only the heads train
    det = zoo.finetune("ssd_resnet50_v1_fpn_640x640_coco17_tpu-8", "five/annotations.json",
                       images="five/images", steps=100, batch_size=4, trainable="heads")

Starts from the zoo checkpoint (everything that fits is restored, the class-dependent head layers
are re-initialised for the new class count), trains the chosen variables (``trainable``: all, the
prediction heads, or glob patterns) with the losses of the model's ``pipeline.config`` (CenterNet's
focal/L1 losses; SSD's anchor matching, box coder, focal/smooth-L1 losses and hard example mining;
Faster R-CNN's RPN and second-stage sampling, box, class and mask losses),
re-estimates the statistics of the BatchNorms that trained on the training images, and, when
``out_dir`` is given, exports the result in the zoo's own layout (``out_dir/<name>/``), packs it
as ``out_dir/<name>.tar.gz`` and writes ``out_dir/registry.yaml`` so that ``ODZOO_REGISTRY`` makes
it loadable by name. Training checkpoints go to ``out_dir/train/`` (a rerun resumes from them).
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import validate
from .errors import ArgumentError, ConfigError, DatasetError, UnsupportedModelError

__all__ = [
    "FinetuneResult", "check_arguments", "check_trainable", "evaluate_detector", "finetune",
]


@dataclasses.dataclass
class FinetuneResult:
    """Where things were written and what training did (``Detector.finetune_result``)."""

    steps: int
    final_loss: float
    seconds: float
    history: list[dict[str, float]]
    model_dir: Path | None = None
    tarball: Path | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    registry: Path | None = None
    training_checkpoints: list[str] = dataclasses.field(default_factory=list)
    selection: dict[str, int] = dataclasses.field(default_factory=dict)  # see zoo.train.trainable.select_trainable
    optimizer: str | None = None  # the Keras optimizer's class: the pipeline.config's, or Adam


def _dataset(train_data: Any, images: str | os.PathLike[str] | None) -> Any:
    from .datasets.coco import CocoDataset

    if isinstance(train_data, CocoDataset):
        return train_data
    if isinstance(train_data, (str, os.PathLike)):
        path = Path(train_data)
        if path.is_dir():
            ann = path / "annotations.json"
            return CocoDataset(ann, Path(images) if images else path / "images")
        if images is None:
            raise DatasetError(f"pass images= (the folder of the images that {path} describes)")
        return CocoDataset(path, images)
    raise DatasetError(f"train_data must be a CocoDataset, an annotations JSON path or a dataset folder, "
                       f"not {type(train_data).__name__}")


#: Meta-architectures odzoo can fine-tune.
TRAINABLE = ("center_net", "ssd", "faster_rcnn")
SCHEDULES = ("cosine", "constant")


def check_arguments(*, num_classes: Any, steps: Any, epochs: Any, batch_size: Any, learning_rate: Any,
                     schedule: Any, warmup_steps: Any, checkpoint_every: Any, out_dir: Any, name: Any,
                     input_size: Any, seed: Any, recalibrate_batches: Any, as_options: bool = False) -> None:
    """Every scalar argument of :func:`finetune`, checked before any data or model is read.

    ``as_options``: name the arguments as command-line options (``--batch-size``) in messages.
    """
    def n(name: str) -> str:
        return "--" + name.replace("_", "-").replace("out-dir", "out") if as_options else name

    if (steps is None) == (epochs is None):
        raise ConfigError("give exactly one of steps= or epochs=" if not as_options else "give --steps or --epochs")
    validate.optional_integer(steps, n("steps"), minimum=1)
    if epochs is not None:
        validate.real(epochs, n("epochs"), positive=True)
    validate.optional_integer(num_classes, n("num_classes"), minimum=1)
    validate.integer(batch_size, n("batch_size"), minimum=1)
    if learning_rate is not None:
        validate.real(learning_rate, n("learning_rate"), positive=True)
    if schedule is not None and schedule not in SCHEDULES:
        raise ArgumentError(f"{n('schedule')} must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    warmup = validate.optional_integer(warmup_steps, n("warmup_steps"), minimum=0)
    if warmup is not None and steps is not None and warmup >= steps:
        raise ArgumentError(f"{n('warmup_steps')} ({warmup}) must be fewer than {n('steps')} ({steps})")
    validate.optional_integer(checkpoint_every, n("checkpoint_every"), minimum=1)
    validate.integer(seed, n("seed"), minimum=0)
    validate.integer(recalibrate_batches, n("recalibrate_batches"), minimum=0)
    if input_size is not None:
        sides = (input_size,) if not isinstance(input_size, (tuple, list)) else tuple(input_size)
        if len(sides) not in (1, 2):
            raise ArgumentError(f"{n('input_size')} must be one side or (height, width), got {input_size!r}")
        for side in sides:
            if validate.integer(side, n("input_size"), minimum=32) % 32:
                raise ArgumentError(f"{n('input_size')} must be a multiple of 32 (at least 32), got {side}")
    if out_dir is not None:
        from .output_path import check_output_path

        check_output_path(out_dir, n("out_dir"), kind="folder")
    if name is not None:
        from .registry import valid_name

        if not isinstance(name, str) or not valid_name(name):
            raise ArgumentError(f"{n('name')} {name!r} is not a valid model name (letters, digits, _ . -; "
                                "starting with a letter or digit)")


_ARCHITECTURE_NAMES = {"center_net": "CenterNet", "ssd": "SSD", "faster_rcnn": "Faster R-CNN"}


def _not_trainable(label: str, meta: str) -> str:
    shown = _ARCHITECTURE_NAMES.get(meta, meta)
    return (f"{label}: odzoo cannot fine-tune {shown} models ({meta}) yet, only "
            f"{', '.join(_ARCHITECTURE_NAMES.values())} models (e.g. centernet_resnet50)")


def _meta_architecture_of_config(path: Path) -> str:
    from .pipeline_config import load, model_config

    return model_config(load(path))[0]


def check_trainable(model_or_name: Any) -> None:
    """Refuse, before any data is read, a model whose architecture odzoo cannot fine-tune.

    Registry names, ``pipeline.config`` files, model folders and Keras detectors are checked here;
    archives and URLs are checked once downloaded (their config is inside).
    """
    from .detector import Detector

    label = repr(str(model_or_name)) if not isinstance(model_or_name, Detector) else repr(model_or_name)
    meta: str | None = None
    if isinstance(model_or_name, Detector):
        spec_meta = getattr(model_or_name.spec, "meta_architecture", None)
        folder = model_or_name.model_dir
        if spec_meta is not None:
            meta = spec_meta
        elif folder is not None and (folder / "pipeline.config").is_file():
            meta = _meta_architecture_of_config(folder / "pipeline.config")
    elif isinstance(model_or_name, (str, os.PathLike)):
        from .loading import resolve_spec

        spec, _ = resolve_spec(model_or_name)  # unknown names fail here, with suggestions
        path = Path(model_or_name)
        if spec is not None:
            if spec.kind != "detector" or spec.meta_architecture is None:
                raise UnsupportedModelError(f"{spec.name} is a {spec.kind} ({spec.family}), not a detector; "
                                            "fine-tune a detector (e.g. centernet_resnet50)")
            meta, label = spec.meta_architecture, spec.name
        elif path.is_file() and path.suffix not in (".gz", ".tgz", ".tar"):
            meta = _meta_architecture_of_config(path)
        elif path.is_dir() and (path / "pipeline.config").is_file():
            meta = _meta_architecture_of_config(path / "pipeline.config")
    else:
        raise ArgumentError(f"model must be a registry name, a path or a Detector, not {type(model_or_name).__name__}")
    if meta is not None and meta not in TRAINABLE:
        raise UnsupportedModelError(_not_trainable(label, meta))


def _labels(dataset: Any, num_classes: int) -> dict[int, str]:
    names = dataset.categories
    labels = {i + 1: names[cid] for i, cid in enumerate(sorted(names))}
    for i in range(len(labels) + 1, num_classes + 1):
        labels[i] = f"class_{i}"
    return labels


def _open_model(model_or_name: Any, num_classes: int, labels: Mapping[int, str], strict: bool) -> tuple[Any, Any]:
    """``(Detector, pipeline config Message)``; must run inside the strategy's scope."""
    from .detector import Detector
    from .pipeline_config import Message, load

    if isinstance(model_or_name, Detector):
        if model_or_name.net is None:
            raise ConfigError(f"{model_or_name!r} does not run our Keras model; load it with backend='keras'")
        if model_or_name.model_dir is None or not (model_or_name.model_dir / "pipeline.config").is_file():
            raise ConfigError("the detector has no model folder with a pipeline.config to train from")
        if int(model_or_name.net.num_classes) != num_classes:
            raise ConfigError(f"the detector predicts {model_or_name.net.num_classes} classes, not {num_classes}; "
                              f"pass its name instead so the heads are rebuilt for {num_classes}")
        return model_or_name, load(model_or_name.model_dir / "pipeline.config")
    path = Path(model_or_name) if isinstance(model_or_name, (str, os.PathLike)) else None
    if path is not None and path.is_file() and path.suffix not in (".gz", ".tgz", ".tar"):
        # a bare pipeline.config: a freshly initialised model, trained from scratch
        from .backends.keras_backend import KerasBackend
        from .models.builder import build_model

        cfg: Message = load(path)
        net = build_model(cfg, num_classes=num_classes, label_map=labels)
        return Detector(KerasBackend(net), label_map=labels), cfg
    from .loading import load as zoo_load

    det = zoo_load(model_or_name, num_classes=num_classes, label_map=labels, strict=strict)
    if det.net is None or det.model_dir is None:
        raise ConfigError(f"{model_or_name!r} did not load as a Keras model of odzoo; load it with backend='keras'")
    return det, load(det.model_dir / "pipeline.config")


def evaluate_detector(detector: Any, dataset: Any, *, score_threshold: float = 0.0) -> Any:
    """COCO box evaluation of ``detector`` on a :class:`~zoo.datasets.coco.CocoDataset` whose category
    names match the detector's labels. Returns :class:`~zoo.eval.EvalResult`."""
    from .eval import category_mapping, detections_to_coco, evaluate

    labels = detector.label_map or {}
    mapping = category_mapping(labels, dataset.categories) if labels else None
    results: list[dict] = []
    for image_id, image, _ in dataset:
        dets = detector.detect(image, score_threshold=score_threshold)
        results += detections_to_coco(dets, image_id, mapping)
    return evaluate(dataset, results, iou_type="bbox", evaluator="pycocotools")


def finetune(
    model_or_name: Any,
    train_data: Any,
    *,
    images: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 8,
    learning_rate: float | None = None,
    schedule: str | None = None,
    warmup_steps: int | None = None,
    augment: bool = True,
    checkpoint_every: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    strategy: Any = None,
    progress: bool = True,
    input_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    strict: bool = True,
    recalibrate_batches: int = 25,
    saved_model: bool = True,
    trainable: str | Sequence[str] = "all",
) -> Any:
    """Fine-tune a zoo detector and return the trained :class:`~zoo.detector.Detector`.

    ``model_or_name``: a registry name/alias, URL, archive or model folder (restored from its
    checkpoint), a Keras :class:`Detector`, or a ``pipeline.config`` path (trained from scratch).
    ``train_data``: a :class:`~zoo.datasets.coco.CocoDataset`, an annotations JSON (with
    ``images=``) or a folder holding ``annotations.json`` and ``images/``. ``num_classes`` defaults
    to the dataset's category count; classes follow ascending category id. Give ``steps`` or
    ``epochs`` (passes over the dataset). The optimizer: by default the config's
    ``train_config.optimizer`` (momentum, Adam or RMSProp with its learning-rate schedule), stretched
    so that the config's schedule (e.g. 1,000 warmup steps of 50,000) spans this run's steps (see
    :mod:`zoo.train.optimizer`); given ``learning_rate``, ``schedule`` or ``warmup_steps``, Adam
    with a linear warmup (default 10% of the steps) to ``learning_rate`` (default 1e-3), then
    ``schedule`` ``"cosine"`` (default) or ``"constant"``. ``input_size``: train (and export) at this
    square size instead of the config's. ``strategy``: a ``tf.distribute`` strategy; the model is built inside its scope.
    With ``out_dir`` the result is exported (see the module docstring) and the returned detector is
    loaded back from the packed archive; without it the trained detector is returned as is.
    ``trainable``: ``"all"`` (default), ``"heads"`` (only the prediction heads, BatchNorm frozen: the
    few-shot recipe) or a list of glob patterns of variable names (see :func:`zoo.train.trainable.select_trainable`);
    BatchNorm is also frozen where the config sets ``freeze_batchnorm``.
    """
    check_arguments(num_classes=num_classes, steps=steps, epochs=epochs, batch_size=batch_size,
                     learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
                     checkpoint_every=checkpoint_every, out_dir=out_dir, name=name, input_size=input_size,
                     seed=seed, recalibrate_batches=recalibrate_batches)
    from .train.data import check_has_boxes
    from .train.trainable import check_trainable_selection

    check_trainable(model_or_name)
    selection = check_trainable_selection(trainable)

    dataset = _dataset(train_data, images)
    if len(dataset) == 0:
        raise DatasetError(f"{dataset!r} has no images")
    k = int(num_classes) if num_classes is not None else len(dataset.categories)
    if k < len(dataset.categories):
        raise DatasetError(f"num_classes={k} is fewer than the dataset's {len(dataset.categories)} categories")
    check_has_boxes(dataset)

    import keras
    import tensorflow as tf

    from .train.batch_norm import recalibrate_batch_norm
    from .train.families import family_parts, training_geometry
    from .train.new_head import reinitialize_new_head
    from .train.trainable import select_trainable
    from .train.trainer import TrainConfig, Trainer

    total = int(steps) if steps is not None else max(1, math.ceil(float(epochs) * len(dataset) / batch_size))
    labels = _labels(dataset, k)
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(int(seed))
    with strategy.scope():
        det, config = _open_model(model_or_name, k, labels, strict)
    from .pipeline_config import model_config

    meta = model_config(config)[0]
    if meta not in TRAINABLE:  # archives and URLs: known only once downloaded
        raise UnsupportedModelError(_not_trainable(repr(str(model_or_name)), meta))
    net = det.net
    if det is not model_or_name:  # loaded here: its new head is untrained (a Detector given may be trained)
        reinitialize_new_head(det, config, seed=int(seed))
    geometry = training_geometry(net, input_size)
    data, objective, freeze_bn = family_parts(meta, net, config, dataset, geometry, k, augment, int(seed))
    counts = select_trainable(net, selection, freeze_batchnorm=freeze_bn)
    train_config = TrainConfig(steps=total, batch_size=int(batch_size),
                               learning_rate=float(learning_rate) if learning_rate is not None else None,
                               schedule=schedule, warmup_steps=warmup_steps, checkpoint_every=checkpoint_every,
                               pipeline_train_config=config.get("train_config"),
                               seed=int(seed))
    out = Path(out_dir) if out_dir is not None else None
    trainer = Trainer(net, data, train_config, objective=objective, strategy=strategy, out_dir=out)
    run = trainer.run(progress=progress)
    if recalibrate_batches:
        recalibrate_batch_norm(net, data, batches=int(recalibrate_batches), batch_size=int(batch_size),
                               network_input=objective.network_input)
    result = FinetuneResult(steps=run.final_step, final_loss=run.final_loss, seconds=run.seconds,
                            history=run.history, training_checkpoints=run.checkpoints, selection=counts,
                            optimizer=type(trainer.optimizer).__name__)
    if out is None:
        from .backends.keras_backend import KerasBackend
        from .detector import Detector

        trained = Detector(KerasBackend(net), spec=None, model_dir=det.model_dir, label_map=labels)
        trained.finetune_result = result  # type: ignore[attr-defined]
        return trained
    return _export_and_reload(net, config, labels, out, name or f"{_base_name(model_or_name)}_finetuned",
                              geometry, train_config, result, saved_model)


def _base_name(model_or_name: Any) -> str:
    text = getattr(getattr(model_or_name, "spec", None), "name", None) or str(model_or_name)
    base = Path(text).name
    for suffix in (".tar.gz", ".tgz", ".config"):
        base = base.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in base) or "model"


def _export_size(geometry: Any) -> tuple[int, int] | None:
    """The input size to write into the exported config: the export writes a square size as a padded
    keep-aspect resizer, so a square fixed-shape resizer (SSD's) is left as the config has it."""
    square_fixed = geometry.resizer == "fixed_shape" and geometry.height == geometry.width
    return None if square_fixed else (geometry.height, geometry.width)


def _export_and_reload(net: Any, config: Any, labels: Mapping[int, str], out: Path, name: str, geometry: Any,
                       train_config: Any, result: FinetuneResult, saved_model: bool) -> Any:
    from .exporting import export_model, make_tarball, registry_entry, write_registry
    from .loading import load as zoo_load
    from .registry import parse_registry_file

    exported = export_model(net, out / name, config=config, label_map=labels,
                            input_size=_export_size(geometry), batch_size=train_config.batch_size,
                            num_steps=train_config.steps, saved_model=saved_model)
    tarball, sha, size = make_tarball(exported.folder, out / f"{name}.tar.gz")
    entry = registry_entry(name, tarball, config=exported.pipeline_config, label_map=labels, sha256=sha,
                           size_bytes=size, display_name=f"{name} (fine-tuned)")
    registry = write_registry(out / "registry.yaml", [entry])
    spec = parse_registry_file(registry)[0]
    result.model_dir, result.tarball, result.sha256, result.size_bytes, result.registry = (
        exported.folder, tarball, sha, size, registry)
    det = zoo_load(spec, progress=False)
    det.finetune_result = result  # type: ignore[attr-defined]
    return det
