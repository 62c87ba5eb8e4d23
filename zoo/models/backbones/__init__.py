"""Feature extractors, grouped by the meta-architecture that runs them.

* :mod:`zoo.models.backbones.centernet` - CenterNet (contract: :class:`zoo.models.centernet.Backbone`);
* :mod:`zoo.models.backbones.ssd` - SSD and EfficientDet (:class:`zoo.models.ssd.SsdFeatureExtractor`);
* :mod:`zoo.models.backbones.faster_rcnn` - Faster R-CNN and Mask R-CNN
  (:class:`zoo.models.faster_rcnn.FasterRcnnFeatureExtractor`).

A module registers its factory under the ``feature_extractor.type`` strings it implements with
:func:`zoo.models.registry.register_feature_extractor`; the registry imports a family's modules on
its first lookup. Classification networks several families build on live in :mod:`zoo.models.nets`.
"""
