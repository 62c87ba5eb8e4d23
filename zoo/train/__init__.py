"""Training: CenterNet and SSD-family targets and losses, augmentation, the input pipeline and the loop.

The public entry point is :func:`zoo.finetune`; these modules are its parts:

* :mod:`zoo.train.targets` — Gaussian centre heatmaps, size/offset (and keypoint) targets;
* :mod:`zoo.train.losses` — penalty-reduced focal loss and L1 losses, weighted as in pipeline.config;
* :mod:`zoo.train.augment` — flip (with keypoint permutation), crop/zoom jitter, colour jitter;
* :mod:`zoo.train.data` — COCO-format dataset -> batched ``tf.data`` of images and targets;
* :mod:`zoo.train.trainer` — the loop: warmup + cosine Adam, checkpoints, distribution strategies,
  minimising a family's objective (CenterNet's, or :mod:`zoo.train.ssd`'s: anchor matching, box coder
  targets, focal / smooth-L1 losses and hard example mining for SSD, RetinaNet and EfficientDet).
"""
