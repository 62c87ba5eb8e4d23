"""Running zoo models against the original implementation's reference arrays (``fixtures/NAME/reference.npz``).

* :func:`write_reference_checkpoint` - the checkpoint the references were computed with;
* :func:`zoo_config`, :func:`build_zoo_model` - a model from its zoo ``pipeline.config``;
* :func:`reference_image`, :func:`load_reference`;
* :class:`ReferenceRun` - one model restored from its reference checkpoint and run once;
* :func:`reference_error`, :func:`check_reference` - comparing an output with a (full or sampled) array;
* :func:`check_detections` - detections against the reference's.
"""
from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np

from .conftest import CONFIGS, FIXTURES, INPUT_IMAGE, MANIFESTS, TOOLS


@functools.cache
def _synth_tool() -> Any:
    """The shared ``synth_checkpoint.py``, imported in-process (saves a TensorFlow start-up per checkpoint)."""
    spec = importlib.util.spec_from_file_location("synth_checkpoint", TOOLS / "synth_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_reference_checkpoint(name: str, folder: str | Path) -> Path:
    """The checkpoint the references were computed with: the manifest's keys, seed 0, the fixture's overrides
    (``synth_checkpoint.py MANIFEST FOLDER --seed 0 --overrides fixtures/NAME/overrides.npz``)."""
    manifest = json.loads((MANIFESTS / f"{name}.json").read_text())
    with np.load(FIXTURES / name / "overrides.npz") as z:
        overrides = {k: z[k] for k in z.files}
    _synth_tool().write_checkpoint(manifest, str(folder), seed=0, overrides=overrides)
    return Path(folder)


def small_zoo_folder(name: str, folder: str | Path, size: int) -> Path:
    """A model folder of zoo config ``name`` with its image resizer at ``size`` and its reference checkpoint."""
    import re

    folder = Path(folder)
    folder.mkdir(parents=True)
    text = (CONFIGS / name / "pipeline.config").read_text()
    text = re.sub(r"\b(min_dimension|max_dimension|height|width): \d+", rf"\1: {size}", text)
    (folder / "pipeline.config").write_text(text)
    write_reference_checkpoint(name, folder / "checkpoint")
    return folder


def zoo_config(name: str, meta: str | None = None) -> Any:
    """The ``model.<meta-architecture>`` message of zoo model ``name`` (``meta`` asserted when given)."""
    from zoo.pipeline_config import load, model_config

    arch, msg = model_config(load(CONFIGS / name / "pipeline.config"))
    assert meta is None or arch == meta, (name, arch)
    return msg


def build_zoo_model(name: str, **kwargs: Any) -> Any:
    """Zoo model ``name`` built from its pipeline.config (fresh weights); ``kwargs`` go to ``build_model``."""
    from zoo.models.builder import build_model

    return build_model(CONFIGS / name / "pipeline.config", **kwargs)


def reference_image() -> np.ndarray:
    """``inputs/A.png`` as a ``[1, H, W, 3]`` uint8 batch."""
    from PIL import Image

    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))[np.newaxis]


def load_reference(name: str) -> dict[str, np.ndarray]:
    """Every array of ``fixtures/NAME/reference.npz``."""
    with np.load(FIXTURES / name / "reference.npz") as ref:
        return {k: ref[k] for k in ref.files}


class ReferenceRun:
    """One zoo model, strictly restored from its reference checkpoint, run once on the reference image.

    ``predictions`` are the model's own ``predict`` outputs (tensors); ``detections`` its
    ``postprocess`` outputs as numpy arrays; ``reference`` the original's arrays.
    """

    def __init__(self, name: str, checkpoint: Path) -> None:
        import tensorflow as tf

        from zoo.checkpoint import restore
        from zoo.models.faster_rcnn import FasterRCNN

        self.name = name
        self.checkpoint = checkpoint
        self.model = build_zoo_model(name)
        self.report = restore(self.model.checkpoint_map(), checkpoint, model_variables=self.model.keras_model.weights)
        self.preprocessed, self.true_shapes = self.model.preprocess(tf.constant(reference_image()))
        if isinstance(self.model, FasterRCNN):  # proposals are bounded by the true image
            self.predictions = self.model.predict(self.preprocessed, self.true_shapes)
        else:
            self.predictions = self.model.predict(self.preprocessed)
        self.detections = {k: v.numpy() for k, v in self.model.postprocess(self.predictions, self.true_shapes).items()}
        self.reference = load_reference(name)

    def stored_keys(self) -> int:
        """How many entries the checkpoint holds (object graph and save counter included)."""
        import tensorflow as tf

        return len(tf.train.load_checkpoint(str(self.checkpoint / "ckpt-0")).get_variable_to_shape_map())

    def flat_prediction(self, key: str) -> np.ndarray:
        """A prediction by its reference name: ``feature_maps_0`` is element 0 of list ``feature_maps``."""
        name, _, index = key.rpartition("_")
        if name in self.predictions and isinstance(self.predictions[name], list):
            return self.predictions[name][int(index)].numpy()
        return np.asarray(self.predictions[key])


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    """Relative L2 distance ``|got - want| / |want|`` in float64."""
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-12))


def reference_error(ref: dict[str, np.ndarray], key: str, got: np.ndarray) -> float:
    """Relative L2 error of ``got`` against reference ``key``: the full array, or its stored sample."""
    got = np.asarray(got)
    if key in ref:
        assert got.shape == ref[key].shape, (key, got.shape, ref[key].shape)
        return rel_l2(got, ref[key])
    assert tuple(ref[f"{key}__shape"]) == got.shape, (key, got.shape, tuple(ref[f"{key}__shape"]))
    return rel_l2(got.ravel()[ref[f"{key}__sample_idx"]], ref[f"{key}__sample_val"])


def check_reference(ref: dict[str, np.ndarray], key: str, got: np.ndarray, tol: float = 1e-4) -> None:
    """Assert ``got`` matches reference ``key`` within ``tol`` relative L2.

    Large arrays are stored as a sample (``__sample_idx`` / ``__sample_val``) plus exact ``__sum`` and
    ``__sumsq``: the sample must match within ``tol`` and the norm and sum within the same tolerance.
    """
    got = np.asarray(got)
    error = reference_error(ref, key, got)
    assert error < tol, f"{key}: relative L2 {error:.2e}"
    if key in ref:
        return
    norm = np.sqrt(float(ref[f"{key}__sumsq"]))
    assert abs(np.linalg.norm(got.astype(np.float64)) - norm) <= tol * norm, key
    assert abs(got.astype(np.float64).sum() - float(ref[f"{key}__sum"])) <= tol * np.sqrt(got.size) * norm, key


def ranking_match(anchors: np.ndarray, classes: np.ndarray, ref_anchors: np.ndarray, ref_classes: np.ndarray,
                  ref_scores: np.ndarray, *, score_tol: float) -> np.ndarray:
    """For each of our detections (anchor, class), the reference rank holding the same detection.

    Our detections must be the reference's in the reference's order, except among detections whose
    reference scores tie within ``score_tol`` (float round-off, which differs between CPUs and kernels,
    may order such ties either way); a near-tie at the last place may be traded for another detection.
    """
    anchors, classes = np.asarray(anchors).reshape(-1), np.asarray(classes).reshape(-1)
    ref_scores = np.asarray(ref_scores, np.float64).reshape(-1)
    rank_of = {(int(a), int(c)): j for j, (a, c) in
               enumerate(zip(np.asarray(ref_anchors).reshape(-1), np.asarray(ref_classes).reshape(-1)))}
    assert len(anchors) == len(ref_scores), f"{len(anchors)} detections, the reference has {len(ref_scores)}"
    ranks = np.full(len(anchors), -1)
    for i, key in enumerate(zip(anchors.tolist(), classes.tolist())):
        j = rank_of.get((int(key[0]), int(key[1])))
        if j is None:
            assert ref_scores[i] - ref_scores[-1] <= score_tol, f"rank {i} holds a detection the reference lacks"
            continue
        assert abs(ref_scores[i] - ref_scores[j]) <= score_tol, f"rank {i} holds the reference's rank {j}"
        ranks[i] = j
    return ranks


def check_detections(det: dict[str, np.ndarray], ref: dict[str, np.ndarray], *, score_atol: float, box_atol: float,
                     raw_tol: float | None = None, batch_index: int = 0, class_offset: int = 0) -> None:
    """The reference's detections (count; classes and anchors in the reference's order up to near-ties,
    see :func:`ranking_match`), scores and boxes within the given absolute tolerances; with ``raw_tol``
    the raw boxes and scores too (relative L2). ``ref`` holds ``postprocess/*`` arrays or serving
    outputs; ``class_offset`` is added to our classes (the exporter's 1-based ids)."""
    def pick(key: str) -> np.ndarray:
        return np.asarray(ref[f"postprocess/{key}"] if f"postprocess/{key}" in ref else ref[key])

    i = batch_index
    np.testing.assert_array_equal(det["num_detections"][i], pick("num_detections")[0])
    ranks = ranking_match(det["detection_anchor_indices"][i], det["detection_classes"][i] + class_offset,
                          pick("detection_anchor_indices")[0], pick("detection_classes")[0],
                          pick("detection_scores")[0], score_tol=score_atol)
    ours = np.flatnonzero(ranks >= 0)
    np.testing.assert_allclose(det["detection_scores"][i][ours], pick("detection_scores")[0][ranks[ours]], atol=score_atol)
    np.testing.assert_allclose(det["detection_boxes"][i][ours], pick("detection_boxes")[0][ranks[ours]], atol=box_atol)
    if raw_tol is not None:
        for key in ("raw_detection_boxes", "raw_detection_scores"):  # per anchor: order-free
            check_reference(ref, f"postprocess/{key}", det[key], tol=raw_tol)
        # per detection: our rows in the reference's order (a row traded at the last place keeps ours)
        multiclass = np.asarray(det["detection_multiclass_scores"]).copy()
        multiclass[i, ranks[ours]] = np.asarray(det["detection_multiclass_scores"])[i, ours]
        check_reference(ref, "postprocess/detection_multiclass_scores", multiclass, tol=raw_tol)
