"""Compare two ``results.json`` files and flag regressions.

Models are matched by name and device. With ``tolerance`` t (relative), a regression is:

* an accuracy drop: new AP < old AP x (1 - t) for box, keypoint or mask AP;
* a latency increase: new p50 > old p50 x (1 + t);
* a model that ran in the old results and fails in the new ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import DatasetError


@dataclasses.dataclass(frozen=True)
class Finding:
    """One compared figure of one model."""

    model: str
    device: str
    metric: str
    old: float | None
    new: float | None
    regression: bool
    note: str = ""

    @property
    def change(self) -> float | None:
        """Relative change (new / old - 1)."""
        if self.old in (None, 0) or self.new is None:
            return None
        return self.new / self.old - 1.0

    def line(self) -> str:
        flag = "REGRESSION" if self.regression else "ok"
        change = "" if self.change is None else f" ({self.change:+.1%})"
        old = "–" if self.old is None else f"{self.old:.4g}"
        new = "–" if self.new is None else f"{self.new:.4g}"
        note = f" {self.note}" if self.note else ""
        return f"{flag:<10} {self.model} [{self.device}] {self.metric}: {old} -> {new}{change}{note}"


def load(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written by ``odzoo bench``."""
    from ..datasets.json_file import read_json

    p = Path(path)
    doc = read_json(p, what="benchmark results", expect=dict, hint="pass a results.json written by 'odzoo bench'")
    if not isinstance(doc.get("models"), list):
        raise DatasetError(f"{p} is not an odzoo results.json (no 'models' list)")
    return doc


_ACCURACY = (("box AP", "bbox"), ("keypoint AP", "keypoints"), ("mask AP", "segm"))


def _ap(rec: dict, iou: str) -> float | None:
    acc = rec.get("accuracy") or {}
    try:
        return float(acc[iou]["stats"]["AP"])
    except (KeyError, TypeError):
        return None


def _p50(rec: dict) -> float | None:
    try:
        return float(rec["latency"]["p50_ms"])
    except (KeyError, TypeError):
        return None


def compare(old: dict[str, Any], new: dict[str, Any], *, tolerance: float = 0.05) -> list[Finding]:
    """Every comparable figure of every model present in both documents."""
    if tolerance < 0:
        raise DatasetError(f"tolerance must be >= 0, got {tolerance}")
    before = {_key(r): r for r in old.get("models", [])}
    findings: list[Finding] = []
    matched: set[tuple[Any, Any, Any]] = set()
    for rec in new.get("models", []):
        key = _match(_key(rec), before)
        model, device = str(key[0]), _where(key)
        prev = before.get(key)
        matched.add(key)
        if prev is None:
            findings.append(Finding(model, device, "presence", None, None, False, "new model, nothing to compare"))
            continue
        if "error" in rec:
            findings.append(Finding(model, device, "run", None, None, "error" not in prev, rec["error"]))
            continue
        if "error" in prev:
            continue
        for label, iou in _ACCURACY:
            a, b = _ap(prev, iou), _ap(rec, iou)
            if a is not None and b is not None:
                findings.append(Finding(model, device, label, a, b, b < a * (1.0 - tolerance)))
        a, b = _p50(prev), _p50(rec)
        if a is not None and b is not None:
            findings.append(Finding(model, device, "p50 ms", a, b, b > a * (1.0 + tolerance)))
    gone = set(before) - matched
    for key in sorted(gone, key=str):
        findings.append(Finding(str(key[0]), _where(key), "presence", None, None, False, "missing from the new results"))
    return findings


def _key(rec: dict[str, Any]) -> tuple[Any, Any, Any]:
    """A record's identity: model, device and backend (one model may run on several backends)."""
    return rec.get("model"), rec.get("device"), rec.get("backend")


def _match(key: tuple[Any, Any, Any], before: dict[tuple[Any, Any, Any], Any]) -> tuple[Any, Any, Any]:
    """``key``, or the one old key of the same model and device when ``key`` names no backend (a
    record of a model that failed before a backend was known)."""
    if key in before or key[2] is not None:
        return key
    same = [k for k in before if k[:2] == key[:2]]
    return same[0] if len(same) == 1 else key


def _where(key: tuple[Any, Any, Any]) -> str:
    return str(key[1]) if key[2] is None else f"{key[1]}, {key[2]}"


def has_regression(findings: list[Finding]) -> bool:
    return any(f.regression for f in findings)
