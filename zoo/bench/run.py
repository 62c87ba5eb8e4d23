"""Benchmark orchestration: per model, load times, memory, latency, throughput and COCO accuracy.

A detector is any object with ``detect(images, *, score_threshold=0.0, max_detections=None)``
(one :class:`~zoo.detections.Detections` per image; a list for a list) and ``spec`` (a
:class:`~zoo.registry.ModelSpec`); when it has ``timed_detect(image)`` returning
``(Detections, {"preprocess_s", "inference_s", "postprocess_s"})`` the stages are timed apart.
Models named by string are obtained with :func:`zoo.download` (timed as the download) and
:func:`zoo.load` (timed as the load from the cache).

mAP figures in reports are in percent (COCO AP x 100), like the zoo's published numbers.
"""
from __future__ import annotations

import dataclasses
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..datasets.coco import CocoDataset
from ..errors import ZooError
from ..eval.coco_results import (
    category_mapping,
    detections_to_coco,
    is_coco_label_map,
    write_results,
)
from ..eval.evaluate import evaluate, evaluator_version, resolve_evaluator
from ..labels import COCO_LABELS
from . import latency as lat
from .distributed import (
    DevicePlan,
    WorkerInfo,
    gather_results,
    placement,
    plan_device,
    run_on_devices,
    worker_info,
)
from .env import fingerprint
from .footprint import model_size_bytes, source_model
from .memory import MemoryProbe

SCHEMA = "odzoo-bench/1"


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """How to benchmark. ``iterations``/``min_duration_s`` are minimums of the timed loop.

    ``backend``: the backend every model is loaded with (None: ``zoo.load``'s choice); ``backends``:
    several, each model benchmarked once per backend (rows side by side in the report).
    """

    device: str = "cpu"
    backend: str | None = None
    backends: tuple[str, ...] = ()
    iterations: int = 20
    min_duration_s: float = 1.0
    warmup: int = 3
    batch: int = 1
    max_images: int | None = None
    score_threshold: float = 0.0
    max_detections: int = 100
    evaluator: str = "auto"
    split: str | None = None
    latency: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def backend_choices(self) -> tuple[str | None, ...]:
        """The backends each named model is benchmarked on (None: ``zoo.load``'s own choice)."""
        return self.backends or (self.backend,)


def quiet() -> bool:
    """True when ``ODZOO_QUIET`` asks for no progress output."""
    from .. import settings

    return settings.quiet()


def progress(*, desc: str, total: int | None = None) -> Any:
    """A tqdm progress bar on stderr (silent when ``ODZOO_QUIET=1``); use as a context manager."""
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, disable=quiet(), leave=False, unit="img")


# ----------------------------------------------------------------------------- helpers on detectors
def model_labels(detector: Any) -> dict[int, str]:
    """The detector's ``{label id: name}`` (COCO when its spec has no label map)."""
    labels = getattr(detector, "label_map", None) or getattr(getattr(detector, "spec", None), "label_map", None)
    return dict(labels) if labels else dict(COCO_LABELS)


def _spec_value(detector: Any, path: str, default: Any = None) -> Any:
    obj = getattr(detector, "spec", None)
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return default
    return obj


def latency_image(detector: Any, dataset: CocoDataset | None) -> np.ndarray:
    """The image timed: the dataset's first, else a deterministic textured image of the model's input size."""
    if dataset is not None and len(dataset):
        return dataset.load_image(dataset.image_ids[0])
    spec_input = _spec_value(detector, "input")
    height, width = 480, 640
    if spec_input is not None and getattr(spec_input, "resizer", None) == "fixed_shape":
        height, width = int(spec_input.height or height), int(spec_input.width or width)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _as_list(out: Any) -> list:
    return list(out) if isinstance(out, (list, tuple)) else [out]


# ----------------------------------------------------------------------------- accuracy
def mapping_mode(detector: Any, dataset: CocoDataset) -> str:
    """``"id"`` when model and dataset both use COCO ids, ``"name"`` otherwise."""
    return "id" if is_coco_label_map(model_labels(detector)) and is_coco_label_map(dataset.categories) else "name"


def detect_dataset(
    detector: Any,
    dataset: CocoDataset,
    *,
    score_threshold: float = 0.0,
    max_detections: int | None = 100,
    plan: DevicePlan | None = None,
) -> list[dict]:
    """COCO results of ``detector`` on every image of ``dataset`` (dataset category ids)."""
    ids = category_mapping(model_labels(detector), dataset.categories)

    image_ids = dataset.image_ids
    with progress(desc=f"detect {_spec_value(detector, 'name', 'model')}", total=len(image_ids)) as bar:

        def one(image_id: Any, image: Any = None) -> list[dict]:
            image = dataset.load_image(image_id) if image is None else image
            dets = _as_list(detector.detect(image, score_threshold=score_threshold, max_detections=max_detections))[0]
            bar.update(1)
            return detections_to_coco(dets, image_id, ids)

        if plan is None:  # images decoded ahead, in parallel, while the model runs
            from ..image_pipeline import prefetched

            per_image = [one(i, im) for i, im in zip(image_ids, prefetched(dataset.load_image, image_ids))]
        else:
            per_image = run_on_devices(plan, image_ids, one)
    return [r for chunk in per_image for r in chunk]


def evaluate_results(
    detector: Any,
    dataset: CocoDataset,
    results: list[dict],
    evaluator: str,
    keypoint_dataset: CocoDataset | None = None,
) -> dict[str, Any]:
    """Box statistics always; keypoint and mask statistics where the model and the data have them.

    Keypoints are scored against ``keypoint_dataset`` when given (COCO keeps them in
    ``person_keypoints_<split>.json``), else against ``dataset`` if its categories declare keypoints;
    only the images of ``dataset`` are scored.
    """
    outputs = tuple(_spec_value(detector, "outputs", ("boxes",)))
    acc: dict[str, Any] = {"bbox": evaluate(dataset, results, iou_type="bbox", evaluator=evaluator).to_dict()}
    if "keypoints" in outputs:
        kp_data = keypoint_dataset if keypoint_dataset is not None else dataset
        if any(c.get("keypoints") for c in kp_data.category_records):
            ids = [i for i in dataset.image_ids if i in set(kp_data.image_ids)]
            kp_cats = {c["id"] for c in kp_data.category_records if c.get("keypoints")}
            kp = [r for r in results if "keypoints" in r and r["category_id"] in kp_cats and r["image_id"] in set(ids)]
            acc["keypoints"] = evaluate(kp_data.select(ids), kp, iou_type="keypoints", evaluator=evaluator).to_dict()
    if "masks" in outputs and any("segmentation" in r for r in results):
        seg = [r for r in results if "segmentation" in r]
        acc["segm"] = evaluate(dataset, seg, iou_type="segm", evaluator=evaluator).to_dict()
    return acc


def protocol(detector: Any | None, dataset: CocoDataset | None, options: BenchOptions) -> dict[str, Any]:
    """What the accuracy numbers mean: dataset, split, images, thresholds, evaluator."""
    evaluator = resolve_evaluator(options.evaluator)
    spec_input = _spec_value(detector, "input") if detector is not None else None
    out: dict[str, Any] = {
        "dataset": None if dataset is None else str(dataset.annotations_path),
        "images_dir": None if dataset is None else str(dataset.images_dir),
        "split": options.split,
        "image_count": None if dataset is None else len(dataset),
        "input_size": None if spec_input is None else list(spec_input.size),
        "score_threshold": options.score_threshold,
        "max_detections": options.max_detections,
        "evaluator": evaluator,
        "evaluator_version": evaluator_version(evaluator),
        "category_mapping": None if dataset is None or detector is None else mapping_mode(detector, dataset),
        "device": options.device,
        "latency_batch": 1,
        "throughput_batch": options.batch,
    }
    return out


# ----------------------------------------------------------------------------- one model
def acquire(name: str, backend: str | None) -> tuple[Any, dict[str, float | None]]:
    """Download (timed) then load from the cache (timed) a model named in the registry, archive or
    folder; ``backend`` None leaves the choice to ``zoo.load`` (a TFLite export runs on ``tflite``)."""
    import zoo

    _, download_s = lat.time_call(lambda: zoo.download(name))
    kwargs = {} if backend is None else {"backend": backend}
    detector, load_s = lat.time_call(lambda: zoo.load(name, **kwargs))
    return detector, {"download_s": download_s, "load_s": load_s}


def _backends_for(entry: Any, options: BenchOptions) -> tuple[str | None, ...]:
    """The backends ``entry`` is benchmarked on: each chosen one for a model name, archive or model
    folder; its own for a loaded detector and for a TFLite export (which only the tflite backend runs)."""
    from ..loading import default_backend

    if not isinstance(entry, str) or default_backend(entry) == "tflite":
        return (None,)
    return options.backend_choices()


def _published(detector: Any) -> dict[str, Any]:
    pub = _spec_value(detector, "published")
    keys = ("box_map", "keypoint_map", "mask_map", "speed_ms")
    return {k: (None if pub is None else getattr(pub, k, None)) for k in keys}


def _deltas(
    accuracy: dict[str, Any] | None, latency: dict[str, Any] | None, published: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, iou in (("box_map", "bbox"), ("keypoint_map", "keypoints"), ("mask_map", "segm")):
        measured = None if not accuracy or iou not in accuracy else 100.0 * accuracy[iou]["stats"]["AP"]
        out[key] = measured
        out[f"{key}_delta"] = None if measured is None or published.get(key) is None else measured - published[key]
    p50 = None if not latency else latency["p50_ms"]
    out["p50_ms"] = p50
    out["speed_ratio"] = None if p50 is None or not published.get("speed_ms") else p50 / published["speed_ms"]
    return out


def bench_detector(
    detector: Any,
    *,
    dataset: CocoDataset | None = None,
    options: BenchOptions | None = None,
    plan: DevicePlan | None = None,
    times: dict[str, float | None] | None = None,
    load_memory: dict[str, Any] | None = None,
    name: str | None = None,
    keypoint_dataset: CocoDataset | None = None,
    results_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Benchmark one loaded detector; returns its record for ``results.json``.

    ``name`` is used when the detector has no registry spec (a model loaded from a folder or archive).
    With ``results_dir`` the COCO results on ``dataset`` are kept as
    ``results_dir/detections-<model>.json`` (``odzoo eval`` reads them), named in the record.
    """
    options = options or BenchOptions()
    plan = plan or plan_device(options.device)
    if dataset is not None:
        category_mapping(model_labels(detector), dataset.categories)  # fail before timing when nothing matches
    record: dict[str, Any] = {
        "model": _spec_value(detector, "name", name or type(detector).__name__),
        "display_name": _spec_value(detector, "display_name"),
        "family": _spec_value(detector, "family"),
        "backend": getattr(detector, "backend", options.backend),
        "source_model": source_model(detector),
        "size_bytes": model_size_bytes(detector),
        "outputs": list(_spec_value(detector, "outputs", ("boxes",))),
        "device": plan.spec,
        "devices": list(plan.devices),
        "times": {"download_s": None, "load_s": None, "first_call_s": None, **(times or {})},
        "memory": {"load": load_memory},
        "published": _published(detector),
    }
    image = latency_image(detector, dataset)
    timed = getattr(detector, "timed_detect", None)

    def call() -> Any:
        if callable(timed):
            return timed(image)[1]
        detector.detect(image, score_threshold=options.score_threshold, max_detections=options.max_detections)
        return None

    with MemoryProbe(plan.primary.split("device:")[-1]) as probe:
        with placement(plan):
            _, record["times"]["first_call_s"] = lat.time_call(
                lambda: detector.detect(image, score_threshold=options.score_threshold,
                                        max_detections=options.max_detections))
            stats = None
            if options.latency:
                stats = lat.measure(call, warmup=options.warmup, min_iterations=options.iterations,
                                    min_duration_s=options.min_duration_s)
            record["latency"] = None if stats is None else stats.to_dict()
            record["throughput"] = None
            if options.latency and options.batch > 1:
                batch = [image] * options.batch
                bstats = lat.measure(
                    lambda: detector.detect(batch, score_threshold=options.score_threshold,
                                            max_detections=options.max_detections),
                    warmup=1, min_iterations=max(3, options.iterations // 4), min_duration_s=options.min_duration_s)
                record["throughput"] = {"batch": options.batch, "images_per_s": lat.throughput(options.batch, bstats),
                                        "latency": bstats.to_dict()}
            elif stats is not None:
                record["throughput"] = {"batch": 1, "images_per_s": lat.throughput(1, stats),
                                        "latency": stats.to_dict()}
    record["memory"]["inference"] = probe.result
    record["accuracy"] = None
    if dataset is not None:
        results = detect_dataset(detector, dataset, score_threshold=options.score_threshold,
                                 max_detections=options.max_detections, plan=plan)
        record["num_results"] = len(results)
        record["accuracy"] = evaluate_results(detector, dataset, results, options.evaluator, keypoint_dataset)
        if results_dir is not None:
            stem = record["model"] if len(options.backends) < 2 else f"{record['model']}-{record['backend']}"
            target = Path(results_dir) / f"detections-{stem}.json"
            record["detections_file"] = str(write_results(results, target))
    record["protocol"] = protocol(detector, dataset, options)
    record["summary"] = _deltas(record["accuracy"], record["latency"], record["published"])
    return record


def resolve_models(patterns: Sequence[str]) -> list[str]:
    """Registry names for names, aliases and fnmatch patterns (``centernet_*``), in order, no repeats.

    Local archives, model folders and URLs are kept as they are.
    """
    from ..model_ref import URL_SCHEMES, parse_model_ref
    from ..registry import list_models

    names: list[str] = []
    for pattern in patterns:
        if urlsplit(pattern).scheme in URL_SCHEMES or Path(pattern).exists():
            found = [pattern]  # an archive, folder or URL: zoo.download / zoo.load take it as is
        elif any(ch in pattern for ch in "*?["):
            found = [s.name for s in list_models(pattern)]
            if not found:
                from ..errors import UnknownModelError

                raise UnknownModelError(f"no model matches {pattern!r}; run 'odzoo list' to see every model")
        else:
            found = [parse_model_ref(pattern).spec.name]
        names += [n for n in found if n not in names]
    return names


def run(
    models: Sequence[Any],
    *,
    dataset: CocoDataset | None = None,
    options: BenchOptions | None = None,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = ("json", "md", "png"),
    keypoint_dataset: CocoDataset | None = None,
) -> dict[str, Any]:
    """Benchmark every model (registry names/patterns or detector objects) and write the reports.

    A model that fails to download, load or run is recorded with its ``error`` and the run goes
    on with the others. ``keypoint_dataset``: ground truth with person keypoints for keypoint
    models, when ``dataset`` has none. Returns the results document (what ``results.json`` holds).
    """
    options = options or BenchOptions()
    if dataset is not None and options.max_images:
        dataset = dataset.subset(options.max_images)
    plan = plan_device(options.device)
    entries: list[Any] = []
    for m in models:
        entries += resolve_models([m]) if isinstance(m, str) else [m]
    runs = [(entry, backend) for entry in entries for backend in _backends_for(entry, options)]
    records = []
    for entry, backend in runs:
        try:
            if isinstance(entry, str):
                with MemoryProbe(plan.primary.split("device:")[-1]) as probe:
                    with placement(plan):
                        detector, times = acquire(entry, backend)
                record = bench_detector(detector, dataset=dataset, options=options, plan=plan, times=times,
                                        load_memory=probe.result, name=Path(entry).name.removesuffix(".tar.gz"),
                                        keypoint_dataset=keypoint_dataset, results_dir=out_dir)
            else:
                record = bench_detector(entry, dataset=dataset, options=options, plan=plan,
                                        keypoint_dataset=keypoint_dataset, results_dir=out_dir)
        except ZooError as exc:
            name = entry if isinstance(entry, str) else _spec_value(entry, "name", repr(entry))
            record = {"model": name, "backend": backend if isinstance(entry, str) else getattr(entry, "backend", None),
                      "error": f"{type(exc).__name__}: {exc}"}
        records.append(record)
    doc = {
        "schema": SCHEMA,
        "env": fingerprint(),
        "options": options.to_dict(),
        "protocol": protocol(None, dataset, options),
        "models": records,
    }
    if out_dir is not None:
        from .report import write_reports

        write_reports(doc, out_dir, formats=formats)
    return doc


# ----------------------------------------------------------------------------- multi-worker
def run_multiworker(
    detector: Any,
    dataset: CocoDataset,
    *,
    strategy: Any,
    options: BenchOptions | None = None,
    out_dir: str | Path | None = None,
    info: WorkerInfo | None = None,
) -> dict[str, Any] | None:
    """Evaluate across the workers of ``strategy`` (a ``MultiWorkerMirroredStrategy``).

    Each worker detects on its shard, the results are gathered, and the chief (worker 0) runs one
    COCO evaluation and returns its record (other workers return None). The chief also writes
    ``out_dir/eval.json``.
    """
    import json

    options = options or BenchOptions()
    info = info or worker_info()
    if info is None:
        raise ZooError("multi-worker evaluation needs TF_CONFIG describing the cluster and this task")
    if options.max_images:
        dataset = dataset.subset(options.max_images)
    shard = dataset.shard(info.index, info.count)
    plan = plan_device(options.device)
    local = detect_dataset(detector, shard, score_threshold=options.score_threshold,
                           max_detections=options.max_detections, plan=plan)
    merged = gather_results(strategy, local, out_dir, info)
    if not info.is_chief:
        return None
    record = {
        "model": _spec_value(detector, "name", type(detector).__name__),
        "workers": info.count,
        "host": platform.node(),
        "num_results": len(merged),
        "accuracy": evaluate_results(detector, dataset, merged, options.evaluator),
        "protocol": protocol(detector, dataset, options),
    }
    if out_dir is not None:
        (Path(out_dir) / "eval.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record
