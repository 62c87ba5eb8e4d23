"""Environment fingerprint recorded with every benchmark: software versions and hardware."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_bytes() -> int | None:
    """Physical memory of the machine."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def nvidia_smi() -> list[dict[str, str]]:
    """GPU name, driver and memory from ``nvidia-smi`` (empty when it is not installed)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "driver_version": parts[1], "memory_total": parts[2]})
    return rows


def tf_devices() -> dict[str, Any]:
    """Accelerators TensorFlow sees, with the details it reports, the numeric precision and threads in use."""
    import tensorflow as tf

    gpus = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(dev)
        except (ValueError, RuntimeError):
            details = {}
        cc = details.get("compute_capability")
        gpus.append({"name": dev.name, "device_name": details.get("device_name"),
                     "compute_capability": ".".join(map(str, cc)) if cc else None})
    tpus = [d.name for d in tf.config.list_logical_devices("TPU")]
    try:
        import keras

        policy = keras.mixed_precision.global_policy().name
    except (ImportError, AttributeError):
        policy = None
    return {
        "gpus": gpus,
        "tpus": tpus,
        "precision": {
            "keras_policy": policy,
            "tf32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        },
        "cuda_build": bool(tf.test.is_built_with_cuda()),
        "threads": {  # 0 = TensorFlow's default (one per available core)
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "xla_flags": os.environ.get("TF_XLA_FLAGS"),
    }


def fingerprint() -> dict[str, Any]:
    """Everything needed to say where and with what a benchmark ran."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = os.cpu_count()
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "odzoo": _version("odzoo"),
            "tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
            "keras": _version("keras"),
            "numpy": _version("numpy"),
            "pycocotools": _version("pycocotools"),
            "faster-coco-eval": _version("faster-coco-eval"),
        },
        "cpu": {
            "model": cpu_model(),
            "cores": os.cpu_count(),
            "cores_available": affinity,
            "memory_total_bytes": memory_total_bytes(),
        },
        "tensorflow": tf_devices(),
        "nvidia_smi": nvidia_smi(),
    }
