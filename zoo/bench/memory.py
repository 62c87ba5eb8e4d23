"""Memory measurement: process RSS (current and high-water) and accelerator memory."""
from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _PROC_STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size now."""
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return None


def peak_rss_bytes() -> int:
    """Resident-set high-water mark of this process (since start or the last :func:`reset_peak_rss`)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark to the current RSS (Linux); False where not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def accelerator_memory(device: str) -> dict[str, int] | None:
    """``{"current_bytes", "peak_bytes"}`` of a TF ``GPU:i``/``TPU:i`` device; None on CPU."""
    if not device.upper().startswith(("GPU", "TPU")):
        return None
    import tensorflow as tf

    try:
        info = tf.config.experimental.get_memory_info(device.upper())
    except (ValueError, RuntimeError):
        return None
    return {"current_bytes": int(info["current"]), "peak_bytes": int(info["peak"])}


def reset_accelerator_peak(device: str) -> None:
    """Reset the peak-memory counter of a TF accelerator device (no-op on CPU)."""
    if not device.upper().startswith(("GPU", "TPU")):
        return
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats(device.upper())
    except (ValueError, RuntimeError):
        pass


class MemoryProbe:
    """Records RSS and accelerator memory around a phase: ``with MemoryProbe("GPU:0") as m: ...``."""

    def __init__(self, device: str = "CPU:0") -> None:
        self.device = device
        self.result: dict[str, Any] = {}

    def __enter__(self) -> MemoryProbe:
        self.peak_reset = reset_peak_rss()
        reset_accelerator_peak(self.device)
        self.rss_before = current_rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        self.result = {
            "rss_before_bytes": self.rss_before,
            "rss_after_bytes": current_rss_bytes(),
            "rss_peak_bytes": peak_rss_bytes(),
            "rss_peak_scope": "phase" if self.peak_reset else "process",
            "accelerator": accelerator_memory(self.device),
        }
