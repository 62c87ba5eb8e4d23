"""Reading numeric fields of pipeline.config messages as the original's protobuf classes read them."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = ["f32", "floats", "ints", "repeated"]

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
