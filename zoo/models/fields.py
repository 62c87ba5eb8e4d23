"""Reading numeric fields of pipeline.config messages as the original's protobuf classes read them."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = ["f32", "floats", "ints", "num_classes", "repeated", "require_blocks"]

T = TypeVar("T")


def f32(value: Any) -> float:
    """A protobuf ``float`` field's value as Python reads it (float32 precision)."""
    return float(np.float32(value))


def repeated(msg: Message, field: str, cast: Callable[[Any], T]) -> list[T]:
    """Every value of a repeated field, ``[a, b]`` lists and repeated lines alike, cast one by one."""
    flat: list[T] = []
    for v in msg.all(field) if field in msg else []:
        flat += [cast(x) for x in v] if isinstance(v, (list, tuple)) else [cast(v)]
    return flat


def floats(msg: Message, field: str) -> list[float]:
    """A repeated ``float`` field (empty when absent)."""
    return repeated(msg, field, float)


def ints(msg: Message, field: str, default: tuple[int, ...]) -> tuple[int, ...]:
    """A repeated ``int`` field, ``default`` when absent."""
    return tuple(repeated(msg, field, int)) or default


def require_blocks(msg: Message, meta: str, *blocks: str) -> None:
    """Refuse a ``model.<meta>`` message lacking one of ``blocks``."""
    for block in blocks:
        if block not in msg:
            raise ConfigError(f"{meta} config has no {block} block")


def num_classes(msg: Message, meta: str, override: int | None = None) -> int:
    """The class count: ``override`` when given, else the message's ``num_classes`` (positive)."""
    classes = int(override if override is not None else msg.get("num_classes", 0))
    if classes <= 0:
        raise ConfigError(f"{meta} num_classes must be positive, got {classes}")
    return classes
