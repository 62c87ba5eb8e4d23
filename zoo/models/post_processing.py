"""The ``post_processing`` message of SSD and Faster R-CNN: per-class NMS, score converter, logit scale."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .fields import f32
from .nms import NmsConfig, nms_config_from_config
from .score_converters import SCORE_CONVERTERS

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = ["PostProcessing", "post_processing_from_config"]


@dataclasses.dataclass(frozen=True)
class PostProcessing:
    """NMS settings and the score converter (applied to ``logits / logit_scale``)."""

    nms: NmsConfig = dataclasses.field(default_factory=NmsConfig)
    score_converter: str = "IDENTITY"
    logit_scale: float = 1.0


def post_processing_from_config(post: Message | None, field: str) -> PostProcessing:
    """Read a ``post_processing`` message (``field``: its name in the config, for error messages)."""
    if post is None:
        return PostProcessing()
    nms = nms_config_from_config(post["batch_non_max_suppression"]) if "batch_non_max_suppression" in post else NmsConfig()
    score_converter = str(post.get("score_converter", "IDENTITY")).upper()
    if score_converter not in SCORE_CONVERTERS:
        raise ConfigError(f"{field}.score_converter {score_converter} is not supported")
    logit_scale = f32(post.get("logit_scale", 1.0))
    if logit_scale == 0:
        raise ConfigError(f"{field}.logit_scale must be non-zero")
    return PostProcessing(nms, score_converter, logit_scale)
