"""Per meta-architecture: the training data, the objective and whether BatchNorm stays frozen."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError

__all__ = ["augment_config", "family_parts", "training_geometry"]


def training_geometry(net: Any, input_size: int | tuple[int, int] | None) -> Any:
    """The training input geometry of ``net``; an ``input_size`` replaces the network's resizer first."""
    from ..models.preprocess import Resizer
    from .data import InputGeometry

    if input_size is not None:
        h, w = (int(input_size), int(input_size)) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ConfigError(f"input_size must be positive multiples of 32, got {h}x{w}")
        net.resizer = (Resizer("keep_aspect_ratio", min_dimension=h, max_dimension=h, pad_to_max_dimension=True)
                       if h == w else Resizer("fixed_shape", height=h, width=w))
    r = net.resizer
    stride = int(getattr(net, "stride", 1))  # CenterNet's output stride; SSD targets need none
    if r.kind == "fixed_shape":
        return InputGeometry(r.height, r.width, "fixed_shape", stride)
    return InputGeometry(r.max_dimension, r.max_dimension, "keep_aspect_ratio", stride)


def augment_config(config: Any) -> Any:
    """Default augmentation, with the keypoint flip permutation of the config's horizontal flip."""
    from .augment import AugmentConfig

    perm: tuple[int, ...] | None = None
    train = config.get("train_config")
    for option in (train.all("data_augmentation_options") if train is not None else []):
        if "random_horizontal_flip" in option:
            values = option["random_horizontal_flip"].all("keypoint_flip_permutation")
            if values:
                perm = tuple(int(v) for v in values)
    return AugmentConfig(keypoint_flip_permutation=perm)


def family_parts(meta: str, net: Any, config: Any, dataset: Any, geometry: Any, num_classes: int,
                 augment: bool, seed: int) -> tuple[Any, Any, bool]:
    """``(training data, objective, freeze_batchnorm)`` of a meta-architecture, from its config."""
    from ..pipeline_config import model_config

    _, msg = model_config(config)
    augmentation = augment_config(config) if augment else None
    ids = sorted(dataset.categories)
    if meta == "ssd":
        from .ssd.data import BoxTrainingData
        from .ssd.objective import SsdObjective

        regularize = bool(config.get("train_config.add_regularization_loss", True))
        data = BoxTrainingData(dataset, geometry, num_classes, category_ids=ids, augment_config=augmentation,
                               max_boxes=int(config.get("train_config.max_number_of_boxes", 100)), seed=seed)
        return data, SsdObjective(net, msg, add_regularization_loss=regularize), bool(msg.get("freeze_batchnorm", False))
    if meta == "faster_rcnn":
        from .faster_rcnn.data import FasterRcnnTrainingData, has_segmentation
        from .faster_rcnn.objective import FasterRcnnObjective

        regularize = bool(config.get("train_config.add_regularization_loss", True))
        data = FasterRcnnTrainingData(dataset, geometry, num_classes, category_ids=ids, augment_config=augmentation,
                                      max_boxes=int(config.get("train_config.max_number_of_boxes", 100)), seed=seed,
                                      with_masks=net.mask_model is not None and has_segmentation(dataset))
        freeze = not bool(msg.get("feature_extractor.batch_norm_trainable", False))
        return data, FasterRcnnObjective(net, msg, add_regularization_loss=regularize), freeze
    from .data import TrainingData
    from .losses import LossWeights
    from .trainer import CenterNetObjective

    weights = LossWeights.from_config(msg)
    data = TrainingData(dataset, geometry, num_classes, category_ids=ids, augment_config=augmentation,
                        min_overlap=weights.min_box_overlap_iou, seed=seed)
    return data, CenterNetObjective(net, weights), False
