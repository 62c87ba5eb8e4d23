"""Checks of scalar arguments shared by the API and the command line.

Each check returns the value as a plain Python number or raises :class:`~zoo.errors.ArgumentError`
whose message names the argument, the value given and what is allowed. Booleans are never taken
for numbers, and floats must be finite.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import ArgumentError

__all__ = ["integer", "optional_integer", "probability", "real"]


def real(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
         positive: bool = False) -> float:
    """A finite real number, optionally ``> 0`` (``positive``) and within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ArgumentError(f"{name} must be a finite number, got {value!r}")
    if positive and number <= 0:
        raise ArgumentError(f"{name} must be greater than 0, got {value!r}")
    if minimum is not None and number < minimum:
        raise ArgumentError(f"{name} must be at least {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ArgumentError(f"{name} must be at most {maximum:g}, got {value!r}")
    return number


def probability(value: Any, name: str) -> float:
    """A finite number in ``[0, 1]`` (score thresholds)."""
    return real(value, name, minimum=0.0, maximum=1.0)


def integer(value: Any, name: str, *, minimum: int | None = None) -> int:
    """A whole number (Python or NumPy integer; not a bool, not a float), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, got {number}")
    return number


def optional_integer(value: Any, name: str, *, minimum: int | None = None) -> int | None:
    """None, or a whole number at least ``minimum``."""
    return None if value is None else integer(value, name, minimum=minimum)
