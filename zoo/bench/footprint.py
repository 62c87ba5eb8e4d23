"""What a loaded model occupies on disk: the files its backend reads.

``keras``: the checkpoint (``checkpoint/``) and ``pipeline.config``; ``saved_model``: the
``saved_model/`` folder; ``tflite``: the ``.tflite`` file. Unknown (``None``) for TF Hub models and
detectors built in memory.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["model_size_bytes", "source_model"]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_size_bytes(detector: Any) -> int | None:
    """Bytes of the files ``detector``'s backend loads, or None when it did not load files."""
    backend = str(getattr(detector, "backend", ""))
    runner = getattr(detector, "runner", None)
    folder = getattr(detector, "model_dir", None)
    if backend == "tflite" and getattr(runner, "path", None) is not None:
        return _size(Path(runner.path))
    if backend == "saved_model" and getattr(runner, "path", None) is not None:
        path = Path(runner.path)
        return _size(path / "saved_model" if (path / "saved_model").is_dir() else path)
    if backend == "keras" and folder is not None and (Path(folder) / "checkpoint").is_dir():
        parts = [Path(folder) / "checkpoint", Path(folder) / "pipeline.config"]
        return sum(_size(p) for p in parts if p.exists())
    return None


def source_model(detector: Any) -> str | None:
    """The model an exported folder was made from (its ``export.json``), else None."""
    folder = getattr(detector, "model_dir", None)
    facts = Path(folder) / "export.json" if folder is not None else None
    if facts is None or not facts.is_file():
        return None
    try:
        value = json.loads(facts.read_text(encoding="utf-8")).get("source_model")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None
