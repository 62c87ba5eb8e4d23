"""The training input pipeline: COCO-format dataset -> augmented, resized, padded batches with targets.

Each element is a dict of ``image`` (float32 ``[H, W, 3]`` RGB 0..255, the network's input size, the
picture resized like the model's image resizer and padded at the bottom/right with zeros) and the
:class:`~zoo.train.targets.CenterNetTargets` fields. Decoding, augmentation and target assignment
run in numpy inside ``tf.numpy_function``; the random choices of the ``k``-th sample drawn come from
``numpy.random.default_rng([seed, k])``, and shuffling uses a seeded ``tf.data`` shuffle, so the
stream of batches is the same on every run with the same seed.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import DatasetError
from .augment import AugmentConfig, Sample, augment
from .targets import center_targets


@dataclasses.dataclass(frozen=True)
class InputGeometry:
    """Network input size and how pictures are fitted into it.

    ``resizer`` ``"keep_aspect_ratio"`` scales the picture to fit ``height x width`` keeping its
    aspect and pads the rest (bottom/right) with zeros; ``"fixed_shape"`` stretches it.
    """

    height: int
    width: int
    resizer: str = "keep_aspect_ratio"
    stride: int = 4

    @property
    def output_size(self) -> tuple[int, int]:
        """The head's grid ``(rows, cols)``."""
        return self.height // self.stride, self.width // self.stride


def resize_and_pad(image: np.ndarray, geometry: InputGeometry) -> tuple[np.ndarray, tuple[float, float]]:
    """Fit ``image`` into the network input; returns it and the fraction ``(fy, fx)`` it covers."""
    from PIL import Image

    h, w = image.shape[:2]
    if geometry.resizer == "fixed_shape":
        new_h, new_w = geometry.height, geometry.width
    else:
        scale = min(geometry.height / h, geometry.width / w)
        new_h = max(1, min(geometry.height, round(h * scale)))
        new_w = max(1, min(geometry.width, round(w * scale)))
    if (new_h, new_w) != (h, w):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.zeros((geometry.height, geometry.width, 3), np.float32)
    canvas[:new_h, :new_w] = image
    return canvas, (new_h / geometry.height, new_w / geometry.width)


_DEFAULT_AUGMENT = AugmentConfig()


def usable_box(annotation: Mapping[str, Any], category_ids: Any) -> bool:
    """Whether an annotation gives a training box: not a crowd, a known category, width and height > 0."""
    if annotation.get("iscrowd", 0) or int(annotation["category_id"]) not in category_ids:
        return False
    _, _, width, height = (float(v) for v in annotation["bbox"])
    return width > 0 and height > 0


def check_has_boxes(dataset: Any, category_ids: Sequence[int] | None = None) -> int:
    """The number of usable training boxes; :class:`DatasetError` when there is none to train on."""
    ids = set(dataset.categories) if category_ids is None else {int(c) for c in category_ids}
    total = usable = 0
    for image_id in dataset.image_ids:
        for ann in dataset.annotations(image_id):
            total += 1
            usable += usable_box(ann, ids)
    if not usable:
        source = getattr(dataset, "annotations_path", None) or repr(dataset)
        detail = (f"its {total} annotations are all crowds, empty boxes or unknown categories" if total
                  else "it has no annotations")
        raise DatasetError(f"{source}: nothing to train on: {detail}; give annotations with boxes of positive size")
    return usable


class TrainingData:
    """A COCO-format dataset prepared for CenterNet training.

    ``category_ids`` lists the dataset's category ids in model class order (class index ``i`` is
    ``category_ids[i]``); by default the dataset's categories in ascending id order.
    """

    def __init__(
        self,
        dataset: Any,
        geometry: InputGeometry,
        num_classes: int,
        *,
        category_ids: Sequence[int] | None = None,
        augment_config: AugmentConfig | None = _DEFAULT_AUGMENT,
        max_boxes: int = 100,
        min_overlap: float = 0.7,
        seed: int = 0,
        keypoint_sigma: Sequence[float] | None = None,
    ) -> None:
        self.dataset = dataset
        self.geometry = geometry
        self.num_classes = int(num_classes)
        ids = list(dataset.categories) if category_ids is None else [int(c) for c in category_ids]
        if len(ids) > self.num_classes:
            raise DatasetError(
                f"the dataset has {len(ids)} categories but the model predicts {self.num_classes} classes; "
                f"pass num_classes={len(ids)} (or more)")
        self.category_ids = ids
        self._class_of = {cid: i for i, cid in enumerate(ids)}
        self.augment_config = augment_config
        self.max_boxes = int(max_boxes)
        self.min_overlap = float(min_overlap)
        self.seed = int(seed)
        self.image_ids = list(dataset.image_ids)
        if not self.image_ids:
            raise DatasetError(f"{dataset!r} has no images to train on")
        self.num_keypoints = self._count_keypoints()
        self.keypoint_sigma = None if keypoint_sigma is None else np.asarray(keypoint_sigma, np.float64)

    def __len__(self) -> int:
        return len(self.image_ids)

    def _count_keypoints(self) -> int:
        counts = {len(c.get("keypoints", [])) for c in getattr(self.dataset, "category_records", [])}
        return max(counts) if counts else 0

    def label_map(self) -> dict[int, str]:
        """``{1-based model class id: name}`` (what an exported model reports)."""
        names = self.dataset.categories
        return {i + 1: names[cid] for i, cid in enumerate(self.category_ids)}

    # ----------------------------------------------------------------- one sample
    def raw_sample(self, index: int) -> Sample:
        """The ``index``-th image with its normalized boxes, 0-based classes (and keypoints)."""
        image_id = self.image_ids[int(index)]
        image = self.dataset.load_image(image_id)
        h, w = image.shape[:2]
        boxes, classes, kps, vis = [], [], [], []
        for ann in self.dataset.annotations(image_id):
            if not usable_box(ann, self._class_of):
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            boxes.append([y / h, x / w, (y + bh) / h, (x + bw) / w])
            classes.append(self._class_of[int(ann["category_id"])])
            if self.num_keypoints:
                raw = np.asarray(ann.get("keypoints", [0.0] * 3 * self.num_keypoints), np.float64).reshape(-1, 3)
                if raw.shape[0] != self.num_keypoints:
                    raw = np.zeros((self.num_keypoints, 3))
                kps.append(np.stack([raw[:, 1] / h, raw[:, 0] / w], -1))
                vis.append(raw[:, 2] > 0)
        sample = Sample(image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64))
        if self.num_keypoints:
            sample.keypoints = np.asarray(kps, np.float32).reshape(-1, self.num_keypoints, 2)
            sample.keypoint_visibility = np.asarray(vis, bool).reshape(-1, self.num_keypoints)
        return sample

    def example(self, index: int, draw: int, *, augmented: bool = True) -> dict[str, np.ndarray]:
        """The training example of image ``index`` as the ``draw``-th sample of the stream."""
        sample = self.raw_sample(index)
        if augmented and self.augment_config is not None:
            rng = np.random.default_rng([self.seed, int(draw)])
            sample = augment(sample, rng, self.augment_config)
        image, (fy, fx) = resize_and_pad(sample.image, self.geometry)
        boxes = sample.boxes * np.array([fy, fx, fy, fx], np.float32)
        kps = None
        if sample.keypoints is not None:
            kps = sample.keypoints * np.array([fy, fx], np.float32)
        targets = center_targets(
            boxes, sample.classes, self.geometry.output_size, self.num_classes,
            max_boxes=self.max_boxes, min_overlap=self.min_overlap,
            keypoints=kps, keypoint_visibility=sample.keypoint_visibility, keypoint_sigma=self.keypoint_sigma)
        out = {"image": image}
        out.update(targets.as_dict())
        return out

    # ----------------------------------------------------------------- tf.data
    def _specs(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        import tensorflow as tf

        oh, ow = self.geometry.output_size
        m, k = self.max_boxes, self.num_keypoints
        specs: dict[str, tuple[tuple[int, ...], Any]] = {
            "image": ((self.geometry.height, self.geometry.width, 3), tf.float32),
            "heatmap": ((oh, ow, self.num_classes), tf.float32),
            "indices": ((m, 2), tf.int32),
            "scale": ((m, 2), tf.float32),
            "offset": ((m, 2), tf.float32),
            "weights": ((m,), tf.float32),
        }
        if k:
            specs.update({
                "keypoint_heatmap": ((oh, ow, k), tf.float32),
                "keypoint_indices": ((m, k, 2), tf.int32),
                "keypoint_offset": ((m, k, 2), tf.float32),
                "keypoint_regression": ((m, k, 2), tf.float32),
                "keypoint_weights": ((m, k), tf.float32),
            })
        return specs

    def tf_dataset(self, batch_size: int, *, shuffle: bool = True, repeat: bool = True,
                   augmented: bool = True) -> Any:
        """Batched ``tf.data.Dataset`` of training examples (infinite when ``repeat``)."""
        import tensorflow as tf

        specs = self._specs()
        names = list(specs)

        def load(index: Any, draw: Any) -> list[np.ndarray]:
            ex = self.example(int(index), int(draw), augmented=augmented)
            return [np.asarray(ex[n], specs[n][1].as_numpy_dtype) for n in names]

        def to_dict(draw: Any, index: Any) -> dict[str, Any]:
            values = tf.numpy_function(load, [index, draw], [specs[n][1] for n in names], stateful=False)
            return {n: tf.ensure_shape(v, specs[n][0]) for n, v in zip(names, values)}

        ds = tf.data.Dataset.range(len(self))
        if shuffle:
            ds = ds.shuffle(len(self), seed=self.seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.enumerate().map(to_dict, num_parallel_calls=2, deterministic=True)
        ds = ds.batch(int(batch_size), drop_remainder=repeat)
        return ds.prefetch(2)


def category_ids_for(dataset: Any, label_map: Mapping[int, str] | None) -> list[int]:
    """Dataset category ids in model class order: by name through ``label_map`` when all names match,
    else ascending id order."""
    cats = dataset.categories
    if label_map:
        by_name = {name: cid for cid, name in cats.items()}
        ordered = [by_name.get(label_map[k]) for k in sorted(label_map)]
        if all(c is not None for c in ordered) and len(ordered) == len(cats):
            return [int(c) for c in ordered if c is not None]
    return sorted(int(c) for c in cats)
