"""SSD-family training (SSD, RetinaNet, EfficientDet): anchor targets, losses, boxes input, objective.

* :mod:`zoo.train.ssd.targets` — argmax anchor matching and box/class target assignment;
* :mod:`zoo.train.ssd.losses` — focal / sigmoid / softmax classification, smooth-L1 / L2
  localization, hard example mining, normalisation, all read from the ``ssd`` block of a config;
* :mod:`zoo.train.ssd.data` — the training input as padded ground-truth boxes (targets are
  assigned in the graph, against the model's own anchors);
* :mod:`zoo.train.ssd.objective` — one training step's losses for :class:`~zoo.train.trainer.Trainer`.
"""
