"""``Detector``: one ``detect()`` for every model and every backend.

``detect`` accepts an ``[H, W, 3]`` uint8 array, a list of images of different sizes, a batched
``[B, H, W, 3]`` array or tensor, a PIL image or a path (see :mod:`zoo.images`), and returns one
:class:`~zoo.detections.Detections` for a single image, a list for a list or batch.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .detections import Detections, check_filter_arguments
from .images import ImageBatch, normalize_images
from .masks import reframe_box_masks

__all__ = ["Detector"]


class Detector:
    """A loaded detection model behind one of the backends (``keras``, ``saved_model``, ``hub``).

    A list of images runs one image per network call; a ``[B, H, W, 3]`` batch runs as one call
    where the backend allows it. Backbones that normalize with batch statistics at inference (as
    the original MobileNetV2-FPN CenterNet does) then give batch-dependent results, like the original.
    """

    def __init__(
        self,
        backend: Any,
        *,
        spec: Any = None,
        model_dir: Path | None = None,
        label_map: Mapping[int, str] | None = None,
        restore_report: Any = None,
    ) -> None:
        self._backend = backend
        self.spec = spec
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.label_map = dict(label_map) if label_map is not None else None
        self.restore_report = restore_report

    # ------------------------------------------------------------------ properties
    @property
    def net(self) -> Any:
        """Our network object (keras backend; built on first access when a stored trace ran so far), else None."""
        return getattr(self._backend, "net", None)

    @property
    def backend(self) -> str:
        """Name of the backend: ``"keras"``, ``"saved_model"`` or ``"hub"``."""
        return str(self._backend.name)

    @property
    def model(self) -> Any:
        """The ``keras.Model`` (preprocessed images -> raw head outputs); None for non-Keras backends."""
        return self._backend.keras_model

    @property
    def runner(self) -> Any:
        """The backend object itself (e.g. ``trace_count`` of the keras backend)."""
        return self._backend

    def __repr__(self) -> str:
        name = getattr(self.spec, "name", None) or (self.model_dir.name if self.model_dir else "?")
        return f"Detector({name!r}, backend={self.backend!r})"

    # ------------------------------------------------------------------ detection
    def detect(
        self, images: Any, *, score_threshold: float = 0.0, max_detections: int | None = None
    ) -> Detections | list[Detections]:
        """Detect objects. One ``Detections`` for one image, a list for a list or a batch.

        ``score_threshold``: a finite number in [0, 1]; ``max_detections``: None (all) or >= 1.
        """
        score_threshold, max_detections = check_filter_arguments(score_threshold, max_detections)
        batch = normalize_images(images)
        outputs = self._run(batch)
        return self._convert(batch, outputs, score_threshold, max_detections)

    __call__ = detect

    # ------------------------------------------------------------------ pipelined detection over files
    def detect_files(
        self,
        sources: Any,
        *,
        score_threshold: float = 0.0,
        max_detections: int | None = None,
        batch_size: int = 1,
        prefetch: int | None = None,
    ) -> Iterator[tuple[str, np.ndarray, Detections]]:
        """``(path, image, detections)`` for each image file of ``sources`` (files and folders), in order.

        Files are decoded in parallel ahead of the model (:mod:`zoo.image_pipeline`), so the network
        does not wait for decoding. ``batch_size > 1`` runs up to that many consecutive same-size
        images as one network call where the backend takes batches (faster per image; networks that
        normalize with batch statistics then give batch-dependent results, as ``detect`` on a batch).
        """
        from .errors import InputError
        from .image_pipeline import decoded_images

        score_threshold, max_detections = check_filter_arguments(score_threshold, max_detections)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        pending: list[tuple[str, np.ndarray]] = []

        def flush() -> Iterator[tuple[str, np.ndarray, Detections]]:
            batch = ImageBatch(image for _, image in pending)
            batch.from_batch = len(pending) > 1
            results = self._convert(batch, self._run(batch), score_threshold, max_detections)
            for (path, image), result in zip(pending, results):
                yield path, image, result
            pending.clear()

        for path, image in decoded_images(sources, prefetch=prefetch):
            if pending and (len(pending) >= batch_size or pending[0][1].shape != image.shape):
                yield from flush()
            pending.append((path, image))
        if pending:
            yield from flush()
    # ------------------------------------------------------------------ end of pipelined detection

    def timed_detect(
        self, image: Any, *, score_threshold: float = 0.0, max_detections: int | None = None
    ) -> tuple[Detections | list[Detections], dict[str, float]]:
        """``detect`` plus wall-clock seconds of its stages.

        ``preprocess_s``: input normalization (decode, dtype/channel conversion); ``inference_s``: the
        backend call (resize, network and box decoding run inside the model's graph, as in the
        exported SavedModel); ``postprocess_s``: conversion to ``Detections`` and filtering.
        """
        score_threshold, max_detections = check_filter_arguments(score_threshold, max_detections)
        t0 = time.perf_counter()
        batch = normalize_images(image)
        t1 = time.perf_counter()
        outputs = self._run(batch)
        t2 = time.perf_counter()
        result = self._convert(batch, outputs, score_threshold, max_detections)
        t3 = time.perf_counter()
        return result, {"preprocess_s": t1 - t0, "inference_s": t2 - t1, "postprocess_s": t3 - t2}

    def _run(self, batch: ImageBatch) -> list[dict[str, np.ndarray]]:
        """One output dict per image (index 0 of each array is that image)."""
        if len(batch) > 1 and not batch.single and batch.same_size and self._batch_ok(batch):
            out = self._backend.infer(np.stack(batch))
            return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(batch))]
        return [self._backend.infer(im[np.newaxis]) for im in batch]

    def _batch_ok(self, batch: ImageBatch) -> bool:
        return bool(getattr(self._backend, "supports_batch", False)) and getattr(batch, "from_batch", False)

    def _convert(
        self,
        batch: ImageBatch,
        outputs: list[dict[str, np.ndarray]],
        score_threshold: float,
        max_detections: int | None,
    ) -> Detections | list[Detections]:
        results = [
            self._one(out, im.shape[:2]).filter(score_threshold, max_detections) for im, out in zip(batch, outputs)
        ]
        return results[0] if batch.single else results

    def _one(self, out: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> Detections:
        n = int(np.asarray(out["num_detections"]).reshape(-1)[0])
        boxes = np.asarray(out["detection_boxes"])[0][:n]
        scores = np.asarray(out["detection_scores"])[0][:n]
        classes = np.rint(np.asarray(out["detection_classes"])[0][:n]).astype(np.int64)
        keypoints = out.get("detection_keypoints")
        keypoint_scores = out.get("detection_keypoint_scores")
        masks = out.get("detection_masks")
        if masks is not None:  # box-relative [N, h, w] (Mask R-CNN) -> image pixels
            masks = reframe_box_masks(np.asarray(masks)[0][:n], boxes, image_size)
        return Detections.from_normalized(
            boxes,
            scores,
            classes,
            (int(image_size[0]), int(image_size[1])),
            label_map=self.label_map,
            keypoints_normalized=None if keypoints is None else np.asarray(keypoints)[0][:n],
            keypoint_scores=None if keypoint_scores is None else np.asarray(keypoint_scores)[0][:n],
            masks=masks,
        )
