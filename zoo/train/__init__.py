"""Training: targets and losses of every family, augmentation, the input pipeline and the loop.

The public entry point is :func:`zoo.finetune`; these modules are its parts:

* :mod:`zoo.train.targets` — Gaussian centre heatmaps, size/offset (and keypoint) targets (CenterNet);
* :mod:`zoo.train.losses` — penalty-reduced focal loss and L1 losses, weighted as in pipeline.config;
* :mod:`zoo.train.ssd` — anchor matching, box coder targets, focal / smooth-L1 losses and hard example
  mining for SSD, RetinaNet and EfficientDet;
* :mod:`zoo.train.faster_rcnn` — RPN and second-stage targets, balanced sampling, box, class and mask
  losses for Faster R-CNN and Mask R-CNN;
* :mod:`zoo.train.augment` — flip (with keypoint permutation), crop/zoom jitter, colour jitter;
* :mod:`zoo.train.data` — COCO-format dataset -> batched ``tf.data`` of images and targets;
* :mod:`zoo.train.families` — a meta-architecture's training data, objective and BatchNorm policy;
* :mod:`zoo.train.trainable` — which variables train (all, the heads, or name patterns);
* :mod:`zoo.train.new_head` — a new class head drawn with the config's initializers;
* :mod:`zoo.train.optimizer` — the pipeline.config's optimizer and learning-rate schedule;
* :mod:`zoo.train.batch_norm` — BatchNorm statistics re-estimated after training;
* :mod:`zoo.train.trainer` — the loop: checkpoints, distribution strategies, a family's objective.
"""
