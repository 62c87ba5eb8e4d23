"""The one reader of odzoo's JSON inputs (COCO annotations, COCO results, benchmark results)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import DatasetError


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def read_json(path: str | Path, *, what: str, expect: type, hint: str) -> Any:
    """Parse the JSON file ``path`` and check that its top level is an ``expect`` (dict or list).

    ``what`` names the file in messages ("COCO annotations file"); ``hint`` says what to pass
    instead. Every failure is a one-line :class:`DatasetError`.
    """
    p = Path(path)
    if p.is_dir():
        raise DatasetError(f"{what} {p} is a folder; {hint}")
    if not p.is_file():
        raise DatasetError(f"{what} not found: {p}; {hint}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except OSError as exc:
        raise DatasetError(f"{what} {p} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{what} {p} is not a UTF-8 text file; {hint}") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{what} {p} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno}") from None
    except ValueError as exc:  # NaN / Infinity
        raise DatasetError(f"{what} {p} is not valid JSON: {exc}") from None
    if not isinstance(data, expect):
        kind = "a JSON object" if expect is dict else "a JSON list"
        raise DatasetError(f"{what} {p} must hold {kind} at the top level, not {type(data).__name__}; {hint}")
    return data
