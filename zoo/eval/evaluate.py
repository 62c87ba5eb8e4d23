"""COCO evaluation through pycocotools or faster-coco-eval, behind one interface.

Both evaluators run the official COCO protocol (IoU 0.50:0.95, 101 recall points, area ranges
small/medium/large, 1/10/100 detections) and give the same statistics; faster-coco-eval is a
C++ implementation of the same algorithm. ``evaluator="auto"`` picks faster-coco-eval when it is
installed and pycocotools otherwise.

The two compute some precisions in a different floating-point order, so raw statistics can differ
in the last bit (about 1e-16). Statistics are therefore rounded to ``STAT_DECIMALS`` decimal places,
far below any meaningful difference, which makes them identical across evaluators.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.metadata
import io
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..labels import PERSON_KEYPOINT_SIGMAS

#: Names of the 12 box / mask statistics, in pycocotools' order.
BOX_STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
#: Names of the 10 keypoint statistics, in pycocotools' order.
KEYPOINT_STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")

EVALUATORS: tuple[str, ...] = ("pycocotools", "faster_coco_eval")
IOU_TYPES: tuple[str, ...] = ("bbox", "segm", "keypoints")
#: Decimal places kept in the statistics (see the module docstring).
STAT_DECIMALS = 10
_DISTRIBUTIONS = {"pycocotools": "pycocotools", "faster_coco_eval": "faster-coco-eval"}


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """The statistics of one COCO evaluation and how they were obtained."""

    iou_type: str
    stats: dict[str, float]
    evaluator: str
    evaluator_version: str
    num_images: int
    num_detections: int
    seconds: float

    @property
    def values(self) -> list[float]:
        """The statistics in the evaluator's order."""
        return list(self.stats.values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        """Human-readable lines, one per statistic."""
        lines = [f"{self.iou_type} ({self.evaluator} {self.evaluator_version}, "
                 f"{self.num_images} images, {self.num_detections} detections)"]
        lines += [f"  {name:<6} {value:7.4f}" for name, value in self.stats.items()]
        return "\n".join(lines)


def available_evaluators() -> list[str]:
    """The evaluators that can be imported here."""
    found = []
    for name in EVALUATORS:
        try:
            __import__(name)
        except ImportError:
            continue
        found.append(name)
    return found


def resolve_evaluator(evaluator: str = "auto") -> str:
    """The concrete evaluator name for ``evaluator`` ("auto", "pycocotools", "faster_coco_eval")."""
    name = evaluator.replace("-", "_")
    have = available_evaluators()
    if name == "auto":
        if not have:
            raise DatasetError("no COCO evaluator is installed: pip install pycocotools")
        return "faster_coco_eval" if "faster_coco_eval" in have else have[0]
    if name not in EVALUATORS:
        raise DatasetError(f"unknown evaluator {evaluator!r}; choose auto, {', '.join(EVALUATORS)}")
    if name not in have:
        raise DatasetError(f"evaluator {name} is not installed: pip install {_DISTRIBUTIONS[name]}")
    return name


def evaluator_version(name: str) -> str:
    """Installed version of an evaluator."""
    try:
        return importlib.metadata.version(_DISTRIBUTIONS[name])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ----------------------------------------------------------------------------- inputs
def _ground_truth_dict(ground_truth: Any) -> dict:
    """A checked copy of the ground truth with the defaults COCOeval relies on filled in."""
    from ..datasets.coco import CocoDataset, _load_json, _validate

    source = "ground truth"
    if isinstance(ground_truth, CocoDataset):
        data, source = ground_truth.to_dict(), str(ground_truth.annotations_path)
    elif isinstance(ground_truth, (str, Path)):
        data, source = _load_json(Path(ground_truth)), str(ground_truth)
    elif isinstance(ground_truth, Mapping):
        data = dict(ground_truth)
    else:
        raise DatasetError(f"ground truth must be a path, a dict or a CocoDataset, not {type(ground_truth).__name__}")
    _validate(data, source)
    data = copy.deepcopy(data)
    for i, ann in enumerate(data["annotations"]):
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    data.setdefault("info", {})
    data.setdefault("licenses", [])
    return data


def _check_results(results: Sequence[Mapping], gt: dict, iou_type: str, source: str = "results") -> list[dict]:
    from ..datasets.coco import id_kind
    from .coco_results import validate_results

    validate_results(results, source)
    image_ids = {img["id"] for img in gt["images"]}
    gt_kind = id_kind(gt["images"][0]["id"]) if gt["images"] else None
    cat_ids = {c["id"] for c in gt["categories"]}
    field = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
    checked = []
    for i, det in enumerate(results):
        where = f"{source}: results[{i}]"
        if id_kind(det["image_id"]) != gt_kind or det["image_id"] not in image_ids:
            raise DatasetError(f"{where}.image_id {det['image_id']!r} is not an image of the ground truth")
        if det["category_id"] not in cat_ids:
            raise DatasetError(
                f"{where}.category_id {det['category_id']!r} is not a category of the ground truth; "
                "map model classes to dataset categories first")
        if field not in det:
            raise DatasetError(f"{where} has no {field!r}, needed for {iou_type} evaluation")
        checked.append(dict(det))  # the evaluators only add keys: a shallow copy keeps the caller's dicts intact
    return checked


def _make_coco(module: Any, data: dict) -> Any:
    coco = module.COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _load_detections(module: Any, coco_gt: Any, results: list[dict], gt: dict) -> Any:
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    # loadRes cannot take an empty list: an empty result set scores zero on every category
    return _make_coco(module, {"images": list(gt["images"]), "categories": copy.deepcopy(gt["categories"]),
                               "annotations": [], "info": {}, "licenses": []})


# ----------------------------------------------------------------------------- evaluation
def evaluate(
    ground_truth: Any,
    results: Sequence[Mapping] | str | Path,
    *,
    iou_type: str = "bbox",
    evaluator: str = "auto",
    image_ids: Sequence[Any] | None = None,
    keypoint_sigmas: Sequence[float] | None = None,
) -> EvalResult:
    """Run a COCO evaluation of ``results`` against ``ground_truth``.

    ``ground_truth``: a COCO JSON path, a dict or a :class:`~zoo.datasets.CocoDataset`.
    ``results``: COCO results (list of dicts) or a path to a results JSON file.
    ``image_ids``: evaluate on these images only (default: every ground-truth image, so images
    without detections count as misses). Keypoint evaluation covers the categories whose
    ground truth declares ``keypoints`` (the person class on COCO) with the 17 COCO sigmas unless
    ``keypoint_sigmas`` is given.
    """
    from .coco_results import load_results

    if iou_type not in IOU_TYPES:
        raise DatasetError(f"unknown iou_type {iou_type!r}; choose {', '.join(IOU_TYPES)}")
    name = resolve_evaluator(evaluator)
    gt = _ground_truth_dict(ground_truth)
    if isinstance(results, (str, Path)):
        dets, source = load_results(results), str(results)
    elif isinstance(results, (list, tuple)):
        dets, source = list(results), "results"
    else:
        raise DatasetError(f"results must be a list of COCO detections or a path, not {type(results).__name__}")
    checked = _check_results(dets, gt, iou_type, source)
    start = time.perf_counter()
    if name == "faster_coco_eval":
        import faster_coco_eval as module

        coco_gt = _make_coco(module, gt)
        coco_dt = _load_detections(module, coco_gt, checked, gt)
        sigmas = None
        if iou_type == "keypoints":
            sigmas = list(keypoint_sigmas or PERSON_KEYPOINT_SIGMAS)
        ev = module.COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=lambda *a, **k: None,
                                    kpt_oks_sigmas=sigmas)
    else:
        from pycocotools import coco as pcoco
        from pycocotools.cocoeval import COCOeval

        coco_gt = _make_coco(pcoco, gt)
        coco_dt = _load_detections(pcoco, coco_gt, checked, gt)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if iou_type == "keypoints":
            ev.params.kpt_oks_sigmas = np.asarray(keypoint_sigmas or PERSON_KEYPOINT_SIGMAS, np.float64)
    known = {img["id"] for img in gt["images"]}
    if image_ids is not None:
        unknown = [i for i in image_ids if i not in known]
        if unknown:
            raise DatasetError(f"image_ids {unknown[:5]!r} are not images of the ground truth")
    ids = sorted(known) if image_ids is None else sorted(set(image_ids))
    ev.params.imgIds = ids
    if iou_type == "keypoints":
        kp_cats = sorted(c["id"] for c in gt["categories"] if c.get("keypoints"))
        if not kp_cats:
            raise DatasetError("keypoint evaluation needs ground-truth categories that declare 'keypoints'")
        ev.params.catIds = kp_cats
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    seconds = time.perf_counter() - start
    names = KEYPOINT_STAT_NAMES if iou_type == "keypoints" else BOX_STAT_NAMES
    values = [round(float(v), STAT_DECIMALS) for v in np.asarray(ev.stats, np.float64)[: len(names)]]
    id_set = set(ids)
    return EvalResult(
        iou_type=iou_type,
        stats=dict(zip(names, values)),
        evaluator=name,
        evaluator_version=evaluator_version(name),
        num_images=len(ids),
        num_detections=sum(1 for d in checked if d["image_id"] in id_set),
        seconds=seconds,
    )
