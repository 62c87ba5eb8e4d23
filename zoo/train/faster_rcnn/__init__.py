"""Faster R-CNN / Mask R-CNN training: RPN and box-classifier targets, sampling, losses, input, objective.

* :mod:`zoo.train.faster_rcnn.targets` — IoU matching of anchors (first stage) and proposals (second
  stage) to ground truth, with the box coder's regression targets;
* :mod:`zoo.train.faster_rcnn.sampling` — the balanced positive/negative minibatch sampler;
* :mod:`zoo.train.faster_rcnn.losses` — the loss settings of a ``faster_rcnn`` config and the RPN,
  box-classifier and mask losses;
* :mod:`zoo.train.faster_rcnn.data` — padded ground-truth boxes (and instance masks) as training input;
* :mod:`zoo.train.faster_rcnn.objective` — one training step's losses for :class:`~zoo.train.trainer.Trainer`.
"""
