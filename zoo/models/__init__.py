"""Keras 3 implementations of the zoo's meta-architectures and their building blocks.

* meta-architectures, one module each: :mod:`~zoo.models.centernet`, :mod:`~zoo.models.ssd`,
  :mod:`~zoo.models.faster_rcnn` (Faster and Mask R-CNN); the seam they share:
  :class:`~zoo.models.protocols.MetaArchitecture`;
* :mod:`~zoo.models.builder` (pipeline.config -> model) and :mod:`~zoo.models.registry` (which code
  implements which meta-architecture and feature extractor);
* feature extractors grouped by meta-architecture under :mod:`~zoo.models.backbones`, on networks
  shared between families in :mod:`~zoo.models.nets`;
* building blocks: :mod:`~zoo.models.layers` (fused BatchNorm, conv hyperparams),
  :mod:`~zoo.models.fpn`, :mod:`~zoo.models.anchors`, :mod:`~zoo.models.box_coders`,
  :mod:`~zoo.models.nms`, :mod:`~zoo.models.post_processing`, :mod:`~zoo.models.preprocess` (image resizers),
  :mod:`~zoo.models.score_converters`, :mod:`~zoo.models.checkpoint_layout` (Keras 2 checkpoint
  key names), :mod:`~zoo.models.fields` (pipeline.config numbers).
"""
