"""Save a Keras model of ours (any family) in the zoo's own archive layout, and register it.

:func:`export_model` writes ``out_dir/``::

    checkpoint/ckpt-0.{index,data-00000-of-00001}, checkpoint/checkpoint
    pipeline.config          the source config with the new num_classes / input size
    saved_model/             serving_default: input_tensor uint8 [1,H,W,3] -> detection_boxes,
                             detection_scores, detection_classes (1-based, float32), num_detections,
                             and detection_keypoints / detection_keypoint_scores / detection_masks
                             where the model has them
    label_map.pbtxt          item { id: N name: "..." } per named class

The checkpoint is object-based with exactly the key layout of the zoo's checkpoints (the model's
checkpoint map, inverted), so the strict loader restores it like any zoo archive.
:func:`make_tarball` packs the folder reproducibly; :func:`registry_entry` / :func:`write_registry`
describe it for ``ODZOO_REGISTRY`` so that ``zoo.load(name)`` and ``odzoo bench`` treat it like a
zoo model.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnsupportedModelError
from ..pipeline_config import Enum, Message, parse

__all__ = [
    "ExportResult",
    "config_to_text",
    "export_model",
    "make_tarball",
    "network_of",
    "registry_entry",
    "updated_config",
    "write_checkpoint",
    "write_label_map",
    "write_registry",
    "write_saved_model",
]

_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """Paths written by :func:`export_model`."""

    folder: Path
    checkpoint: Path
    pipeline_config: Path
    label_map: Path
    saved_model: Path | None


# ----------------------------------------------------------------------------- the network
def network_of(model: Any) -> Any:
    """The network of ours (CenterNet, SSD, Faster R-CNN...) behind a Detector, or the network itself."""
    if hasattr(model, "checkpoint_map") and hasattr(model, "keras_model"):
        return model
    inner = getattr(model, "net", None)
    if inner is not None and hasattr(inner, "checkpoint_map") and hasattr(inner, "keras_model"):
        return inner
    backend = getattr(model, "backend", None)
    raise UnsupportedModelError(
        f"{model!r} does not run a Keras model of odzoo"
        + (f" (backend {backend!r})" if isinstance(backend, str) else "")
        + "; load it with backend='keras' to export it"
    )


centernet_of = network_of  # the name used when only CenterNet could be exported


# ----------------------------------------------------------------------------- checkpoint
def _unescape(part: str) -> str:
    """Checkpoint key component -> object attribute name (``.S`` is ``/``, ``..`` is ``.``)."""
    return re.sub(r"\.(.)", lambda m: "/" if m.group(1) == "S" else m.group(1), part)


def write_checkpoint(variable_map: Mapping[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/ckpt-0`` whose keys are exactly ``variable_map``'s (plus ``save_counter``).

    ``variable_map``: checkpoint key (``model/...``, with or without the
    ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix) -> variable or array. The keys become a tree of
    trackable objects, so the object graph matches the key paths as in the zoo's checkpoints.
    """
    import tensorflow as tf

    roots: dict[str, tf.Module] = {}
    nodes: dict[tuple[str, ...], tf.Module] = {}
    for key, value in sorted(variable_map.items()):
        key = key.removesuffix(_SUFFIX)
        parts = [_unescape(p) for p in key.split("/")]
        if len(parts) < 2:
            raise ConfigError(f"checkpoint key {key!r} needs at least an object and an attribute")
        head = parts[0]
        if head not in roots:
            roots[head] = nodes[(head,)] = tf.Module()
        node = roots[head]
        for i in range(1, len(parts) - 1):
            path = tuple(parts[: i + 1])
            if path not in nodes:
                nodes[path] = tf.Module()
                setattr(node, parts[i], nodes[path])
            node = nodes[path]
        if hasattr(node, parts[-1]):
            raise ConfigError(f"checkpoint key {key!r} is given twice")
        setattr(node, parts[-1], tf.Variable(tf.convert_to_tensor(value), trainable=False))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = tf.train.Checkpoint(**roots)
    manager = tf.train.CheckpointManager(ckpt, str(folder), max_to_keep=1)
    return Path(manager.save(checkpoint_number=0))


# ----------------------------------------------------------------------------- pipeline.config
def _scalar_text(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def config_to_text(msg: Message, indent: int = 0) -> str:
    """Protobuf text format of a parsed config (inverse of :func:`zoo.pipeline_config.parse`)."""
    lines: list[str] = []
    pad = "  " * indent
    for name in msg:
        for value in msg.all(name):
            if isinstance(value, Message):
                lines.append(f"{pad}{name} {{")
                body = config_to_text(value, indent + 1)
                if body:
                    lines.append(body)
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{name}: {_scalar_text(value)}")
    return "\n".join(lines)


def _with(msg: Message, path: list[str], value: Any) -> Message:
    """A copy of ``msg`` with the field at ``path`` replaced (created when absent)."""
    out = Message()
    done = False
    for name in msg:
        for v in msg.all(name):
            if name == path[0] and not done:
                done = True
                if len(path) == 1:
                    out.add(name, value)
                else:
                    out.add(name, _with(v if isinstance(v, Message) else Message(), path[1:], value))
            elif name == path[0] and len(path) == 1:
                continue  # drop further occurrences of a replaced scalar
            else:
                out.add(name, v)
    if not done:
        out.add(path[0], value if len(path) == 1 else _with(Message(), path[1:], value))
    return out


def updated_config(
    config: Message,
    *,
    num_classes: int | None = None,
    input_size: tuple[int, int] | None = None,
    batch_size: int | None = None,
    num_steps: int | None = None,
    label_map_path: str | None = "label_map.pbtxt",
) -> Message:
    """The config with the trained model's facts: classes, input size (a square keep-aspect resizer
    with padding, or fixed shape when not square), training batch/steps and label map path."""
    from ..pipeline_config import model_config

    arch, _ = model_config(config)
    base = ["model", arch]
    if num_classes is not None:
        config = _with(config, base + ["num_classes"], int(num_classes))
    if input_size is not None:
        h, w = int(input_size[0]), int(input_size[1])
        text = (f"keep_aspect_ratio_resizer {{ min_dimension: {h} max_dimension: {h} pad_to_max_dimension: true }}"
                if h == w else f"fixed_shape_resizer {{ height: {h} width: {w} }}")
        config = _with(config, base + ["image_resizer"], parse(text))
    if batch_size is not None and "train_config" in config:
        config = _with(config, ["train_config", "batch_size"], int(batch_size))
    if num_steps is not None and "train_config" in config:
        config = _with(config, ["train_config", "num_steps"], int(num_steps))
    if label_map_path is not None:
        for reader in ("train_input_reader", "eval_input_reader"):
            if reader in config:
                config = _with(config, [reader, "label_map_path"], label_map_path)
    return config


# ----------------------------------------------------------------------------- label map
def write_label_map(label_map: Mapping[int, str], path: str | os.PathLike[str]) -> Path:
    """``item { id: N name: "..." display_name: "..." }`` per class, ascending ids."""
    path = Path(path)
    items = []
    for ident, name in sorted((int(k), str(v)) for k, v in label_map.items()):
        if ident < 1:
            raise ConfigError(f"label ids start at 1; got {ident} for {name!r}")
        quoted = _scalar_text(name)
        items.append(f"item {{\n  id: {ident}\n  name: {quoted}\n  display_name: {quoted}\n}}\n")
    path.write_text("".join(items), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- saved model
def write_saved_model(net: Any, folder: str | os.PathLike[str]) -> Path:
    """Export ``serving_default`` like the zoo's exporter: uint8 ``input_tensor`` [1,H,W,3] in,
    float32 ``detection_boxes`` / ``detection_scores`` / ``detection_classes`` (1-based) /
    ``num_detections`` (and ``detection_multiclass_scores``, keypoints where present) out."""
    import tensorflow as tf

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = net.keras_model

        @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name="input_tensor")])
        def serve(self, input_tensor: tf.Tensor) -> dict[str, tf.Tensor]:
            detections = net(tf.cast(input_tensor, tf.float32))  # preprocess -> predict -> postprocess
            out = {}
            for key, value in detections.items():
                if key == "detection_boxes_strided":
                    continue
                out[key] = tf.cast(value, tf.float32)
            out["detection_classes"] = out["detection_classes"] + 1.0
            out["num_detections"] = tf.reshape(out["num_detections"], [-1])
            return out

    module = Serving()
    folder = Path(folder)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


# ----------------------------------------------------------------------------- the whole folder
def export_model(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    config: Message | str | os.PathLike[str],
    label_map: Mapping[int, str],
    input_size: tuple[int, int] | None = None,
    batch_size: int | None = None,
    num_steps: int | None = None,
    saved_model: bool = True,
) -> ExportResult:
    """Write the zoo layout for ``model`` (a Keras Detector or network) into ``out_dir`` (replaced).

    ``config`` is the pipeline.config the model was built from (Message, text or path);
    ``label_map`` maps the model's 1-based class ids to names (ids within ``1..num_classes``; the
    zoo's COCO map leaves gaps).
    """
    from ..pipeline_config import load

    net = network_of(model)
    if isinstance(config, Message):
        cfg = config
    elif isinstance(config, str) and "{" in config:
        cfg = parse(config)
    else:
        cfg = load(config)
    num_classes = int(net.num_classes)
    outside = sorted(int(k) for k in label_map if not 1 <= int(k) <= num_classes)
    if outside or not label_map:
        raise ConfigError(f"label_map must name classes within 1..{num_classes}; got ids {sorted(label_map)}")
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    prefix = write_checkpoint(net.checkpoint_map(), out / "checkpoint")
    cfg = updated_config(cfg, num_classes=num_classes, input_size=input_size, batch_size=batch_size, num_steps=num_steps)
    config_path = out / "pipeline.config"
    config_path.write_text(config_to_text(cfg) + "\n", encoding="utf-8")
    label_path = write_label_map(label_map, out / "label_map.pbtxt")
    sm = write_saved_model(net, out / "saved_model") if saved_model else None
    return ExportResult(out, prefix, config_path, label_path, sm)


def make_tarball(folder: str | os.PathLike[str], tarball: str | os.PathLike[str]) -> tuple[Path, str, int]:
    """Pack ``folder`` as ``<folder name>/...`` into a reproducible ``.tar.gz`` (sorted members, zero
    mtimes and owners). Returns ``(path, sha256, size in bytes)``."""
    folder = Path(folder)
    tarball = Path(tarball)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [folder] + sorted(p for p in folder.rglob("*"))
        for path in paths:
            info = tar.gettarinfo(str(path), arcname=str(Path(folder.name) / path.relative_to(folder)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
            elif path.is_dir():
                tar.addfile(info)
    data = io.BytesIO()
    with gzip.GzipFile(fileobj=data, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        gz.write(buf.getvalue())
    payload = data.getvalue()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    tarball.write_bytes(payload)
    return tarball, hashlib.sha256(payload).hexdigest(), len(payload)


# ----------------------------------------------------------------------------- registry
def registry_entry(
    name: str,
    tarball: str | os.PathLike[str],
    *,
    config: Message | str | os.PathLike[str],
    label_map: Mapping[int, str],
    display_name: str | None = None,
    family: str = "centernet",
    sha256: str | None = None,
    size_bytes: int | None = None,
    published: Mapping[str, Any] | None = None,
    license: str = "Apache-2.0",
) -> dict[str, Any]:
    """A registry entry (plain dict, YAML-ready) for an exported, packed model."""
    from ..pipeline_config import load, model_config

    cfg = config if isinstance(config, Message) else (parse(config) if isinstance(config, str) and "{" in config
                                                      else load(config))
    arch, msg = model_config(cfg)
    kind, resizer = msg["image_resizer"].oneof()
    if kind == "fixed_shape_resizer":
        spec_input: dict[str, Any] = {"resizer": "fixed_shape", "height": int(resizer["height"]),
                                      "width": int(resizer["width"])}
    else:
        spec_input = {"resizer": "keep_aspect_ratio", "min_dimension": int(resizer["min_dimension"]),
                      "max_dimension": int(resizer["max_dimension"]),
                      "pad_to_max_dimension": bool(resizer.get("pad_to_max_dimension", False))}
    outputs = ["boxes"] + (["keypoints"] if "keypoint_estimation_task" in msg else [])
    path = Path(tarball).resolve()
    with tarfile.open(path, "r:*") as tar:
        first = tar.next()
    if first is None:
        raise ConfigError(f"{path} is an empty archive")
    top = first.name.split("/")[0]
    entry: dict[str, Any] = {
        "name": name,
        "display_name": display_name or name,
        "kind": "detector",
        "family": family,
        "meta_architecture": arch,
        "feature_extractor": str(msg.get("feature_extractor.type")),
        "input": spec_input,
        "outputs": outputs,
        "num_classes": int(msg["num_classes"]),
        "max_detections": int(msg.get("object_center_params.max_box_predictions", 100)),
        "label_map": {int(k): str(v) for k, v in sorted(label_map.items())},
        "url": path.as_uri(),
        "archive_top": top,
        "sha256": sha256,
        "size_bytes": size_bytes,
        "license": license,
    }
    if published:
        entry["published"] = dict(published)
    return entry


def write_registry(path: str | os.PathLike[str], entries: list[dict[str, Any]]) -> Path:
    """Write a registry file (``schema: 1``) holding ``entries``; use it through ``ODZOO_REGISTRY``."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"schema": 1, "models": entries}, sort_keys=False), encoding="utf-8")
    return path
