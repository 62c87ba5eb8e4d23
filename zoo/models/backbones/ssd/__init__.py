"""SSD feature extractors, one module per network.

Each module registers its factory with ``@register_feature_extractor(type, meta="ssd")``
(:mod:`zoo.models.registry`); the contract is :class:`zoo.models.ssd.SsdFeatureExtractor`. The FPN
extractors subclass :class:`zoo.models.fpn.FpnFeatureExtractor`.
"""
