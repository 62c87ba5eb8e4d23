"""Faster R-CNN / Mask R-CNN feature extractors, one module per network.

Each module registers its factory with ``@register_feature_extractor(type, meta="faster_rcnn")``
(:mod:`zoo.models.registry`); the contract is :class:`zoo.models.faster_rcnn.FasterRcnnFeatureExtractor`.
"""
