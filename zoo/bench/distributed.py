"""Devices and distribution: ``--device cpu|gpu:N|gpu|tpu`` and evaluation across workers.

* ``cpu`` / ``gpu:N`` run under ``tf.device``.
* ``gpu`` (every GPU) loads the model under a ``MirroredStrategy`` and splits the images between
  the GPUs, one thread per GPU.
* ``tpu`` connects to the TPU (``TPUClusterResolver``), builds a ``TPUStrategy`` and runs under it;
  it fails with a clear :class:`DeviceError` where no TPU is reachable.
* Across hosts, ``MultiWorkerMirroredStrategy`` reads ``TF_CONFIG``; each worker detects on its
  shard of the dataset (every ``count``-th image from its index), writes its results to
  ``OUT/detections.worker-<i>.json`` and the results are gathered with a collective all-gather,
  so that every worker holds all detections and the chief runs ONE COCO evaluation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DeviceError
from ..files import write_json_atomic


@dataclasses.dataclass(frozen=True)
class DevicePlan:
    """What ``--device`` asks for: ``kind`` CPU/GPU/TPU and the TF device names to use."""

    spec: str
    kind: str
    devices: tuple[str, ...]
    strategy: Any = None

    @property
    def primary(self) -> str:
        """The first device (where latency is measured)."""
        return self.devices[0]


def parse_device(device: str) -> tuple[str, int | None]:
    """``"cpu"`` -> ("CPU", 0); ``"gpu:1"`` -> ("GPU", 1); ``"gpu"`` -> ("GPU", None); ``"tpu"`` -> ("TPU", None)."""
    text = (device or "cpu").strip().lower()
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "gpu", "tpu"):
        raise DeviceError(f"unknown device {device!r}; use cpu, gpu:N, gpu (all GPUs) or tpu")
    if index and not index.isdigit():
        raise DeviceError(f"device index in {device!r} must be a number, e.g. gpu:0")
    if kind == "cpu":
        return "CPU", 0
    return kind.upper(), int(index) if index else None


def tpu_strategy(tpu: str = "") -> Any:
    """Connect to a TPU and return a ``TPUStrategy``; :class:`DeviceError` when none is reachable."""
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeviceError(f"no TPU found ({first}); run on a TPU VM or pick --device cpu / gpu:0") from None
    return tf.distribute.TPUStrategy(resolver)


def plan_device(device: str) -> DevicePlan:
    """Check that ``device`` exists here and return how to use it."""
    import tensorflow as tf

    kind, index = parse_device(device)
    if kind == "CPU":
        return DevicePlan(device, "CPU", ("/CPU:0",))
    if kind == "TPU":
        strategy = tpu_strategy()
        names = tuple(d.name for d in tf.config.list_logical_devices("TPU")) or ("/TPU:0",)
        return DevicePlan(device, "TPU", names, strategy)
    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        raise DeviceError(f"--device {device} asks for a GPU but TensorFlow sees none here; use --device cpu")
    if index is None:
        names = tuple(d.name for d in gpus)
        strategy = tf.distribute.MirroredStrategy(list(names)) if len(names) > 1 else None
        return DevicePlan(device, "GPU", names, strategy)
    if index >= len(gpus):
        raise DeviceError(f"--device {device}: only {len(gpus)} GPU(s) here (gpu:0..gpu:{len(gpus) - 1})")
    return DevicePlan(device, "GPU", (gpus[index].name,))


@contextlib.contextmanager
def placement(plan: DevicePlan, device_name: str | None = None) -> Iterator[None]:
    """Run the block under the plan's strategy scope (if any) and on ``device_name`` (default primary)."""
    import tensorflow as tf

    with contextlib.ExitStack() as stack:
        if plan.strategy is not None:
            stack.enter_context(plan.strategy.scope())
        stack.enter_context(tf.device(device_name or plan.primary))
        yield


def run_on_devices(plan: DevicePlan, items: Sequence[Any], fn: Callable[[Any], Any]) -> list[Any]:
    """``[fn(item) for item in items]`` with the items split round-robin over the plan's devices.

    One thread per device; results come back in the order of ``items``.
    """
    if len(plan.devices) == 1:
        with placement(plan):
            return [fn(item) for item in items]
    out: list[Any] = [None] * len(items)
    errors: list[BaseException] = []

    def work(rank: int, name: str) -> None:
        try:
            with placement(plan, name):
                for i in range(rank, len(items), len(plan.devices)):
                    out[i] = fn(items[i])
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r, n)) for r, n in enumerate(plan.devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


# ----------------------------------------------------------------------------- multi-worker
@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    """This process's place in a multi-worker cluster."""

    index: int
    count: int

    @property
    def is_chief(self) -> bool:
        return self.index == 0


def worker_info(tf_config: str | None = None) -> WorkerInfo | None:
    """Read ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type", "index"}}``); None when unset."""
    text = os.environ.get("TF_CONFIG") if tf_config is None else tf_config
    if not text:
        return None
    try:
        cfg = json.loads(text)
        cluster = cfg["cluster"]
        task = cfg["task"]
        workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
        index = int(task["index"]) + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
    except (ValueError, KeyError, TypeError) as exc:
        raise DeviceError(
            f"TF_CONFIG is malformed ({exc}); see the MultiWorkerMirroredStrategy documentation") from None
    if workers < 1 or not 0 <= index < workers:
        raise DeviceError(f"TF_CONFIG task index {index} is outside its cluster of {workers} worker(s)")
    return WorkerInfo(index, workers)


def multiworker_strategy() -> Any:
    """A ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``. Create it before any other TF work."""
    import tensorflow as tf

    if worker_info() is None:
        raise DeviceError("multi-worker evaluation needs TF_CONFIG describing the cluster and this task")
    return tf.distribute.MultiWorkerMirroredStrategy()


def all_gather_json(strategy: Any, value: Any) -> list[Any]:
    """Every worker's JSON-able ``value``, in worker order, on every worker (collective all-gather)."""
    import numpy as np
    import tensorflow as tf

    payload = np.frombuffer(json.dumps(value).encode("utf-8"), np.uint8).astype(np.int32)
    size = tf.constant([payload.size], tf.int64)
    sizes = strategy.gather(strategy.run(lambda: size), axis=0).numpy().astype(int)
    padded = np.zeros((1, int(sizes.max())), np.int32)
    padded[0, : payload.size] = payload
    block = tf.constant(padded)
    gathered = strategy.gather(strategy.run(lambda: block), axis=0).numpy()
    return [json.loads(gathered[i, : sizes[i]].astype(np.uint8).tobytes().decode("utf-8")) for i in range(len(sizes))]


def gather_results(strategy: Any, results: list[dict], out_dir: str | Path | None, info: WorkerInfo) -> list[dict]:
    """Write this worker's results to ``out_dir`` and return everyone's, merged in worker order."""
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"detections.worker-{info.index}.json", results, durable=False)
    merged: list[dict] = []
    for part_results in all_gather_json(strategy, results):
        merged.extend(part_results)
    return merged
