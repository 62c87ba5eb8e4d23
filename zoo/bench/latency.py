"""Latency measurement: warm-up, then at least N iterations and at least T seconds."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Summary of per-call wall times (milliseconds), plus per-stage medians when reported."""

    iterations: int
    warmup: int
    total_s: float
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    stages_p50_ms: dict[str, float] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def summarize(
    samples_s: list[float], *, warmup: int = 0, stages: Mapping[str, list[float]] | None = None
) -> LatencyStats:
    """Statistics of wall times given in seconds."""
    if not samples_s:
        raise ValueError("no latency samples to summarize")
    ms = np.asarray(samples_s, np.float64) * 1e3
    return LatencyStats(
        iterations=int(ms.size),
        warmup=int(warmup),
        total_s=float(ms.sum() / 1e3),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        min_ms=float(ms.min()),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        stages_p50_ms={k: float(np.percentile(np.asarray(v) * 1e3, 50)) for k, v in (stages or {}).items() if v},
    )


def measure(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_iterations: int = 20,
    min_duration_s: float = 1.0,
    max_iterations: int | None = None,
    clock: Clock = time.perf_counter,
) -> LatencyStats:
    """Time ``fn()`` after ``warmup`` untimed calls, until both minimums are reached.

    When ``fn`` returns a mapping of stage timings (``{"preprocess_s": …, "inference_s": …}``,
    as ``timed_detect`` does), their medians are reported too, under the name without ``_s``.
    ``max_iterations`` caps the loop even when ``min_duration_s`` is not yet reached.
    """
    if min_iterations < 1:
        raise ValueError(f"min_iterations must be >= 1, got {min_iterations}")
    for _ in range(max(0, warmup)):
        fn()
    samples: list[float] = []
    stages: dict[str, list[float]] = {}
    started = clock()
    while True:
        t0 = clock()
        out = fn()
        samples.append(clock() - t0)
        if isinstance(out, Mapping):
            for key, value in out.items():
                if isinstance(value, (int, float)):
                    stages.setdefault(key[:-2] if key.endswith("_s") else key, []).append(float(value))
        done = len(samples) >= min_iterations and clock() - started >= min_duration_s
        if done or (max_iterations is not None and len(samples) >= max_iterations):
            break
    return summarize(samples, warmup=warmup, stages=stages)


def time_call(fn: Callable[[], Any], clock: Clock = time.perf_counter) -> tuple[Any, float]:
    """``(fn(), seconds it took)``."""
    t0 = clock()
    out = fn()
    return out, clock() - t0


def throughput(images_per_call: int, stats: LatencyStats) -> float:
    """Images per second at the median call time."""
    return float(images_per_call) / (stats.p50_ms / 1e3) if stats.p50_ms > 0 else float("inf")
