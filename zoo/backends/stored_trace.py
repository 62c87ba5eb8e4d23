"""Traced detection graphs kept in the cache, so that a later process skips building and tracing.

The keras backend traces one graph per model (:mod:`zoo.backends.keras_backend`). Building the Keras
model and tracing it are most of a cold start, and both give the same graph every time for the same
model folder, options and library versions. So the first process that traces a model writes the
graph (a ``GraphDef``: protobuf, no Python objects) and, for each of its variable inputs, the
checkpoint key that feeds it::

    <cache>/traces/<key>/graph.pb     the traced graph
    <cache>/traces/<key>/trace.json   inputs, outputs, checkpoint key and shape per variable, restore report

``<key>`` digests everything the graph depends on: ``pipeline.config``, the checkpoint's index (its
keys and shapes), the options (classes, label map, precision), odzoo's source, TensorFlow's and Keras's
versions and Keras's dtype policy. A later :func:`zoo.load` of the same folder imports that graph and
feeds it the checkpoint's values: the ops are the same, so are the detections, bit for bit. The Keras
model is built (and the live graph traced) only when something asks for it: ``Detector.net``,
``Detector.model``, fine-tuning, export.

A stored graph is a convenience, never a source of truth: anything wrong with it (unreadable, another
format, a stateful op outside those a detection graph uses, a checkpoint key or shape that no longer
matches) makes the load take the ordinary path, which then writes a fresh one. Writes are atomic (a
work folder renamed into place); failing to write is not an error. ``ODZOO_TRACE_CACHE=0`` turns the
store off.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..checkpoint import VALUE_SUFFIX, RestoreReport
from ..files import file_sha256

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

__all__ = ["StoredGraph", "StoredTraceBackend", "TraceEntry", "TraceStore", "code_digest"]

log = logging.getLogger(__name__)

FORMAT = 1
GRAPH_FILE = "graph.pb"
META_FILE = "trace.json"
#: stateful ops a detection graph may hold; any other stateful op makes a stored graph unusable
_ALLOWED_STATEFUL = frozenset({
    "Assert", "Case", "If", "PartitionedCall", "ReadVariableOp", "StatefulPartitionedCall", "While",
})


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of odzoo's Python source (every ``zoo/**/*.py``, path and bytes)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


class TraceEntry(NamedTuple):
    """One stored graph, as ``odzoo cache ls`` and ``prune`` see it."""

    folder: Path
    size_bytes: int
    last_used: float
    model_folder: Path | None
    """the model folder it was traced from (None when its ``trace.json`` cannot be read)"""


@dataclass
class StoredGraph:
    """A stored detection graph with its variables' values: ``graph(images)`` -> the serving outputs."""

    function: Any
    values: list[tf.Tensor]
    report: RestoreReport
    """the restore report of the process that stored the graph (same checkpoint keys and shapes)"""

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.function(images, *self.values)


class TraceStore:
    """The ``traces`` folder of one cache root."""

    def __init__(self, cache_root: Path) -> None:
        self.root = Path(cache_root) / "traces"
        self.work = Path(cache_root) / "tmp" / "traces"  # work folders, renamed into place when complete

    # ------------------------------------------------------------------ key
    def key(self, folder: Path, checkpoint_prefix: str, options: Mapping[str, Any]) -> str | None:
        """The digest naming a model folder's stored graph, or None when its files cannot be read."""
        import keras
        import tensorflow as tf

        try:
            parts = {
                "format": FORMAT,
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "dtype_policy": keras.config.dtype_policy().name,
                "odzoo": code_digest(),
                "pipeline_config": file_sha256(folder / "pipeline.config"),
                "checkpoint_index": file_sha256(checkpoint_prefix + ".index"),
                "options": dict(options),
            }
        except OSError as exc:
            log.debug("no stored trace for %s: %s", folder, exc)
            return None
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    # ------------------------------------------------------------------ write
    def save(self, key: str, function: Any, variable_keys: Mapping[int, tuple[str, list[int]]],
             report: dict[str, Any], model_folder: Path) -> bool:
        """Store a traced concrete ``function`` under ``key``; ``variable_keys``: ``id`` of a variable's
        handle -> (checkpoint key, shape). False when it cannot be stored (an input that is not a
        checkpoint variable, or a write error), which is never an error."""
        target = self.root / key
        if target.is_dir():
            return True
        graph = function.graph
        captured = list(function.captured_inputs)
        placeholders = graph.inputs[len(graph.inputs) - len(captured):]
        feeds = []
        for external, placeholder in zip(captured, placeholders):
            entry = variable_keys.get(id(external))
            if entry is None:
                log.debug("trace %s not stored: input %s is not a checkpoint variable", key, placeholder.name)
                return False
            feeds.append({"input": placeholder.name, "key": entry[0], "shape": list(entry[1])})
        graph_def = graph.as_graph_def()
        if not _reads_as_inputs(graph_def, [f["input"].split(":")[0] for f in feeds]):
            log.debug("trace %s not stored: a variable is used other than by reading it", key)
            return False
        try:
            _check_ops(graph_def)
        except ValueError as exc:  # a load would refuse it
            log.debug("trace %s not stored: %s", key, exc)
            return False
        meta = {
            "format": FORMAT,
            "image_input": graph.inputs[0].name,
            "outputs": {name: tensor.name for name, tensor in function.structured_outputs.items()},
            "variables": feeds,
            "report": report,
            "model_folder": str(model_folder),
        }
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.work.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self.work))
        except OSError as exc:
            log.debug("trace %s not stored: %s", key, exc)
            return False
        try:
            (work / GRAPH_FILE).write_bytes(graph_def.SerializeToString())
            (work / META_FILE).write_text(json.dumps(meta))
            os.replace(work, target)
            return True
        except OSError as exc:  # another process stored it first, or the disk is full: both harmless
            log.debug("trace %s not stored: %s", key, exc)
            return False
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------------ read
    def load(self, key: str, checkpoint_prefix: str) -> StoredGraph | None:
        """The stored graph ``key`` with its variables' values read from the checkpoint, or None when there is
        none or it cannot be used (the reason is logged at debug level)."""
        import tensorflow as tf

        folder = self.root / key
        if not (folder / META_FILE).is_file():
            return None
        try:
            meta = json.loads((folder / META_FILE).read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
            graph_def = tf.compat.v1.GraphDef.FromString((folder / GRAPH_FILE).read_bytes())
            _check_ops(graph_def)
            report = RestoreReport(**{**meta["report"], "checkpoint": checkpoint_prefix})
            values = _read_values(checkpoint_prefix, meta["variables"])
            function = _import(graph_def, meta)
            os.utime(folder)  # last use, for `odzoo cache prune --older-than`
        except Exception as exc:  # noqa: BLE001 - any damage means: take the ordinary path
            log.debug("stored trace %s not used, removed: %s", folder, exc)
            self.discard(key)  # regenerated by the ordinary path
            return None
        return StoredGraph(function, values, report)

    def discard(self, key: str) -> None:
        """Remove the stored graph ``key`` (moved aside first, so no reader sees half of it)."""
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            aside = Path(tempfile.mkdtemp(prefix=f"{key}.discarded.", dir=self.work))
            os.replace(self.root / key, aside / key)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def entries(self) -> list[TraceEntry]:
        """Every stored graph, by folder name."""
        found = []
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir():
                continue
            try:
                size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
                used = folder.stat().st_mtime
            except OSError:
                continue
            try:
                model = Path(json.loads((folder / META_FILE).read_text())["model_folder"])
            except (OSError, ValueError, KeyError, TypeError):
                model = None
            found.append(TraceEntry(folder, size, used, model))
        return found


def _check_ops(graph_def: Any) -> None:
    """Refuse a graph holding a stateful op a detection graph has no use for (file or network I/O...)."""
    from tensorflow.python.framework import op_def_registry

    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    library = {function.signature.name for function in graph_def.library.function}
    for node in nodes:
        op_def = op_def_registry.get(node.op)
        if op_def is None and node.op not in library:
            raise ValueError(f"unknown op {node.op!r}")
        if op_def is not None and op_def.is_stateful and node.op not in _ALLOWED_STATEFUL:
            raise ValueError(f"stateful op {node.op!r} is not part of a detection graph")


def _reads_as_inputs(graph_def: Any, names: list[str]) -> bool:
    """Turn each variable input of ``graph_def`` (a resource placeholder read only by float32
    ``ReadVariableOp``) into a float32 placeholder and its reads into ``Identity``, so that the values
    are fed directly. False, with ``graph_def`` unchanged, when a variable is used any other way."""
    import tensorflow as tf

    wanted = set(names)
    reads, inputs = [], []
    for node in graph_def.node:
        if node.name in wanted:
            if node.op != "Placeholder":
                return False
            inputs.append(node)
        elif {name.lstrip("^").split(":")[0] for name in node.input} & wanted:
            if node.op != "ReadVariableOp" or node.attr["dtype"].type != tf.float32.as_datatype_enum:
                return False
            reads.append(node)
    for node in reads:
        node.op = "Identity"
        node.ClearField("attr")
        node.attr["T"].type = tf.float32.as_datatype_enum
    for node in inputs:
        node.ClearField("attr")
        node.attr["dtype"].type = tf.float32.as_datatype_enum
    return True


def _read_values(checkpoint_prefix: str, entries: list[dict[str, Any]]) -> list[tf.Tensor]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(checkpoint_prefix)
    shapes = reader.get_variable_to_shape_map()
    values = []
    for entry in entries:
        full = entry["key"] + VALUE_SUFFIX
        if full not in shapes:
            raise KeyError(f"checkpoint has no {entry['key']}")
        if list(shapes[full]) != list(entry["shape"]):
            raise ValueError(f"{entry['key']}: shape {shapes[full]} in the checkpoint, {entry['shape']} in the graph")
        # identity: placed like any op (on the accelerator when there is one), so calls copy nothing
        values.append(tf.identity(tf.constant(reader.get_tensor(full), tf.float32)))
    return values


def _import(graph_def: Any, meta: dict[str, Any]) -> Any:
    import tensorflow as tf

    names = list(meta["outputs"])
    inputs = [entry["input"] for entry in meta["variables"]]

    def imported(images: tf.Tensor, *values: tf.Tensor) -> dict[str, tf.Tensor]:
        input_map = {meta["image_input"]: images, **dict(zip(inputs, values))}
        outputs = tf.graph_util.import_graph_def(
            graph_def, input_map=input_map, return_elements=[meta["outputs"][n] for n in names], name=""
        )
        return dict(zip(names, outputs))

    signature = [tf.TensorSpec([None, None, None, 3], tf.uint8)]
    signature += [tf.TensorSpec(entry["shape"], tf.float32) for entry in meta["variables"]]
    return tf.compat.v1.wrap_function(imported, signature)


class StoredTraceBackend:
    """The keras backend running a stored graph until the Keras model itself is needed.

    ``net``, ``keras_model`` and every other attribute of :class:`~zoo.backends.keras_backend.KerasBackend`
    build the model (``build_live``) on first access; from then on the live backend runs the detections,
    so training or restoring weights is reflected as usual.
    """

    name = "keras"
    supports_batch = True
    stored_trace = True

    def __init__(self, graph: StoredGraph, build_live: Callable[[], Any], precision: str = "float32") -> None:
        self._graph: StoredGraph | None = graph
        self._build_live = build_live
        self._live: Any = None
        self.precision = precision
        self.jit_compile = False

    @property
    def trace_count(self) -> int:
        """Graphs traced in this process (none until the live backend is built)."""
        return self._live.trace_count if self._live is not None else 0

    def live(self) -> Any:
        """The :class:`~zoo.backends.keras_backend.KerasBackend`, built (and restored) on first call."""
        if self._live is None:
            self._live = self._build_live()
            self._graph = None
        return self._live

    @property
    def net(self) -> Any:
        return self.live().net

    @property
    def keras_model(self) -> Any:
        return self.live().keras_model

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.live(), name)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, H, W, 3]`` uint8 -> serving-style numpy outputs."""
        import tensorflow as tf

        if self._graph is None:
            return self.live().infer(batch)
        out = self._graph(tf.convert_to_tensor(batch, tf.uint8))
        return {k: v.numpy() for k, v in out.items()}
