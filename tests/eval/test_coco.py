"""COCO evaluation: the statistics equal what pycocotools computes directly, for both evaluators."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest

from zoo.datasets import CocoDataset, make_shapes_dataset
from zoo.errors import DatasetError
from zoo.eval import BOX_STAT_NAMES, KEYPOINT_STAT_NAMES, available_evaluators, evaluate
from zoo.eval.evaluate import STAT_DECIMALS
from zoo.labels import PERSON_KEYPOINT_SIGMAS, PERSON_KEYPOINTS

EVALUATORS = available_evaluators()


@pytest.fixture(scope="module")
def gt(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = make_shapes_dataset(tmp_path_factory.mktemp("eval_shapes"), 16, seed=7, image_size=(160, 200))
    return json.loads((root / "annotations.json").read_text())


def _direct(gt: dict, results: list[dict], iou_type: str = "bbox", sigmas=None, cat_ids=None) -> list[float]:
    """pycocotools used exactly as its README shows, on the same inputs."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [round(float(v), STAT_DECIMALS) for v in ev.stats]


def _as_results(anns: list[dict], rng: random.Random | None = None) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]),
             "score": 1.0 if rng is None else round(rng.random(), 4)} for a in anns]


def _drop(gt: dict) -> list[dict]:
    return [r for i, r in enumerate(_as_results(gt["annotations"], random.Random(1))) if i % 3]


def _shift(gt: dict) -> list[dict]:
    out = _as_results(gt["annotations"], random.Random(2))
    for i, r in enumerate(out):
        r["bbox"][0] += (i % 5) * 0.08 * r["bbox"][2]
        r["bbox"][1] -= (i % 3) * 0.1 * r["bbox"][3]
    return out


def _wrong_class(gt: dict) -> list[dict]:
    out = _as_results(gt["annotations"], random.Random(3))
    for i, r in enumerate(out):
        if i % 4 == 0:
            r["category_id"] = r["category_id"] % 3 + 1
    return out


def _duplicates(gt: dict) -> list[dict]:
    out = _as_results(gt["annotations"], random.Random(4))
    dup = [dict(r, bbox=[v + 1.0 for v in r["bbox"]], score=r["score"] * 0.5) for r in out[::2]]
    return out + dup


PERTURBATIONS = {"drop": _drop, "shift": _shift, "wrong_class": _wrong_class, "duplicates": _duplicates}


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_ground_truth_scores_one(gt: dict, evaluator: str) -> None:
    result = evaluate(gt, _as_results(gt["annotations"]), evaluator=evaluator)
    assert list(result.stats) == list(BOX_STAT_NAMES)
    assert result.stats["AP"] == 1.0 and result.stats["AP50"] == 1.0 and result.stats["AR100"] == 1.0
    assert result.evaluator == evaluator and result.num_images == 16
    assert result.num_detections == len(gt["annotations"])


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_perturbations_match_pycocotools(gt: dict, name: str) -> None:
    results = PERTURBATIONS[name](gt)
    expected = _direct(gt, results)
    assert expected[0] < 1.0, "the perturbation must cost something"
    for evaluator in EVALUATORS:
        got = evaluate(gt, results, evaluator=evaluator)
        assert got.values == expected, evaluator


def test_default_evaluator_prefers_faster(gt: dict) -> None:
    result = evaluate(gt, _drop(gt))
    assert result.evaluator == ("faster_coco_eval" if "faster_coco_eval" in EVALUATORS else "pycocotools")


def test_faster_coco_eval_is_installed() -> None:
    assert "faster_coco_eval" in EVALUATORS and "pycocotools" in EVALUATORS


@pytest.mark.parametrize("evaluator", EVALUATORS)
def test_no_detections_scores_zero(gt: dict, evaluator: str) -> None:
    result = evaluate(gt, [], evaluator=evaluator)
    assert result.stats["AP"] == 0.0 and result.stats["AR100"] == 0.0 and result.num_detections == 0


def test_image_subset_and_files(gt: dict, tmp_path: Path) -> None:
    keep = [1, 2, 3]
    results = [r for r in _shift(gt) if r["image_id"] in keep]
    gt_sub = dict(gt, images=[i for i in gt["images"] if i["id"] in keep],
                  annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(results))
    got = evaluate(tmp_path / "gt.json", tmp_path / "dets.json", image_ids=keep, evaluator="pycocotools")
    assert got.values == _direct(gt_sub, results)


def test_segm_from_polygons(gt: dict) -> None:
    from pycocotools import mask as mask_utils

    results = []
    for i, a in enumerate(gt["annotations"]):
        img = next(im for im in gt["images"] if im["id"] == a["image_id"])
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], img["height"], img["width"]))
        seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        if i % 3 == 0:  # shrink every third mask so the statistics are not trivial
            m = mask_utils.decode(rle)
            m[: int(np.nonzero(m)[0].mean())] = 0
            r2 = mask_utils.encode(np.asfortranarray(m))
            seg = {"size": r2["size"], "counts": r2["counts"].decode("ascii")}
        results.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": seg,
                        "score": 1.0 - 0.01 * (i % 7)})
    expected = _direct(gt, results, "segm")
    assert 0.0 < expected[0] < 1.0
    for evaluator in EVALUATORS:
        assert evaluate(gt, results, iou_type="segm", evaluator=evaluator).values == expected


def _keypoint_gt() -> dict:
    rng = np.random.default_rng(0)
    images, anns = [], []
    for image_id in range(1, 7):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": 240, "width": 320})
        for k in range(2):
            x, y, w, h = 20 + 140 * k, 30, 100, 180
            pts = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17), np.full(17, 2)], 1)
            pts[rng.integers(0, 17, 3), 2] = 0  # some keypoints not labelled
            pts[pts[:, 2] == 0, :2] = 0
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h],
                         "area": float(w * h), "iscrowd": 0, "num_keypoints": int((pts[:, 2] > 0).sum()),
                         "keypoints": [float(v) for v in pts.reshape(-1)]})
    cats = [{"id": 1, "name": "person", "keypoints": list(PERSON_KEYPOINTS), "skeleton": []},
            {"id": 2, "name": "bicycle"}]
    return {"images": images, "annotations": anns, "categories": cats}


def test_keypoints_use_coco_sigmas() -> None:
    gt = _keypoint_gt()
    rng = np.random.default_rng(1)
    results = []
    for a in gt["annotations"]:
        kps = np.asarray(a["keypoints"], np.float64).reshape(17, 3)
        kps[:, :2] += rng.normal(0, 4.0, (17, 2))
        kps[:, 2] = 1.0
        results.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kps.reshape(-1).tolist(),
                        "bbox": a["bbox"], "score": float(rng.uniform(0.5, 1))})
    expected = _direct(gt, results, "keypoints", sigmas=PERSON_KEYPOINT_SIGMAS, cat_ids=[1])
    assert 0.0 < expected[0] < 1.0
    for evaluator in EVALUATORS:
        got = evaluate(gt, results, iou_type="keypoints", evaluator=evaluator)
        assert list(got.stats) == list(KEYPOINT_STAT_NAMES)
        assert got.values == expected[:10], evaluator


def test_dataset_input_and_errors(gt: dict, tmp_path: Path) -> None:
    root = make_shapes_dataset(tmp_path / "ds", 3, seed=1, image_size=64)
    ds = CocoDataset(root / "annotations.json", root / "images")
    data = json.loads((root / "annotations.json").read_text())
    assert evaluate(ds, _as_results(data["annotations"])).stats["AP"] == 1.0
    bad_image = [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}]
    with pytest.raises(DatasetError, match="image_id 999"):
        evaluate(gt, bad_image)
    bad_cat = [{"image_id": 1, "category_id": 42, "bbox": [0, 0, 5, 5], "score": 1.0}]
    with pytest.raises(DatasetError, match="category_id 42"):
        evaluate(gt, bad_cat)
    with pytest.raises(DatasetError, match="unknown evaluator"):
        evaluate(gt, [], evaluator="nope")
    with pytest.raises(DatasetError, match="segmentation"):
        evaluate(gt, _as_results(gt["annotations"]), iou_type="segm")
    with pytest.raises(DatasetError, match="keypoints"):
        evaluate(gt, [], iou_type="keypoints")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bbox": [1, 2]}, r"results\[0\]\.bbox must be \[x, y, width, height\]"),
        ({"bbox": [0, 0, float("nan"), 1]}, r"results\[0\]\.bbox"),
        ({"score": "0.9"}, r"results\[0\]\.score must be a finite number, got '0.9'"),
        ({"score": float("inf")}, r"results\[0\]\.score"),
        ({"category_id": 1.0}, r"results\[0\]\.category_id must be an integer"),
        ({"image_id": "1"}, r"results\[0\]\.image_id '1' is not an image of the ground truth"),
        ({"keypoints": [1, 2]}, r"results\[0\]\.keypoints"),
        ({"segmentation": "mask"}, r"results\[0\]\.segmentation"),
    ],
)
def test_results_are_checked_record_by_record(gt: dict, change: dict, message: str) -> None:
    result = {"image_id": gt["images"][0]["id"], "category_id": gt["categories"][0]["id"],
              "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.9}
    with pytest.raises(DatasetError, match=message):
        evaluate(gt, [{**result, **change}])


def test_ground_truth_ids_of_one_kind(gt: dict) -> None:
    mixed = copy.deepcopy(gt)
    mixed["images"][1]["id"] = str(mixed["images"][1]["id"])
    with pytest.raises(DatasetError, match=r"images\[1\]\.id is a string .* images\[0\]\.id is an integer"):
        evaluate(mixed, [])
    with pytest.raises(DatasetError, match="image_ids .* are not images of the ground truth"):
        evaluate(gt, [], image_ids=[123456])
    with pytest.raises(DatasetError, match="list of COCO detections or a path"):
        evaluate(gt, {"image_id": 1})
