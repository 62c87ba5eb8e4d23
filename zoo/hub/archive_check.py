"""Checks of an unpacked archive before it becomes a cache entry.

``check_tensor_bundles``: every TensorFlow tensor bundle in the folder (``checkpoint/ckpt-0`` and
``saved_model/variables/variables``) reads back whole. The bundle index records a crc32c per
tensor, and reading a tensor verifies it, so this catches bytes damaged before or inside the
archive that its codec could not see (an uncompressed tar, or damage already present when the
archive was packed). TensorFlow is imported only here, when a bundle is present.

``check_matches_spec``: the archive is the model its registry entry describes (top folder,
meta-architecture and number of classes of its ``pipeline.config``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zoo.errors import ConfigError, DamagedArchiveError, IntegrityError


def tensor_bundles(folder: Path) -> list[Path]:
    """Prefixes of the tensor bundles (``X.index`` next to ``X.data-*``) of a model folder."""
    prefixes = []
    for sub in ("checkpoint", "saved_model/variables"):
        base = folder / sub
        if not base.is_dir():
            continue
        for index in sorted(base.glob("*.index")):
            prefixes.append(index.with_suffix(""))
    return prefixes


def check_tensor_bundles(folder: Path, name: str) -> int:
    """Read every tensor of every bundle under ``folder``; DamagedArchiveError naming the bundle
    if one cannot be read whole. Returns the number of tensors read."""
    prefixes = tensor_bundles(folder)
    if not prefixes:
        return 0
    import tensorflow as tf  # noqa: PLC0415 - only when there is a checkpoint to check

    count = 0
    for prefix in prefixes:
        rel = prefix.relative_to(folder).as_posix()
        if not any(prefix.parent.glob(prefix.name + ".data-*")):
            raise DamagedArchiveError(f"the archive of {name}: checkpoint {rel} has an index but "
                                      "no data files; the archive is damaged or incomplete")
        try:
            reader = tf.train.load_checkpoint(str(prefix))
            for key in sorted(reader.get_variable_to_shape_map()):
                reader.get_tensor(key)
                count += 1
        except (tf.errors.OpError, ValueError, OSError) as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise DamagedArchiveError(f"the archive of {name}: checkpoint {rel} cannot be read "
                                      f"whole ({detail.splitlines()[0][:300]})") from None
    return count


def _mismatch(name: str, field: str, entry_value: Any, archive_value: Any) -> IntegrityError:
    return IntegrityError(
        f"the archive of {name} does not match its registry entry: {field} is {entry_value!r} in "
        f"the entry but {archive_value!r} in the archive; fix the entry's url or {field} (a "
        "private registry may point at another model's archive). Nothing was cached")


def check_matches_spec(folder: Path, name: str, top: str | None, *, archive_top: str | None,
                       meta_architecture: str | None, num_classes: int | None) -> None:
    """IntegrityError when the unpacked archive contradicts what its entry states (fields the entry
    leaves as None are not compared)."""
    if archive_top is not None and top != archive_top:
        raise _mismatch(name, "archive_top", archive_top, top if top is not None else "(no top folder)")
    if meta_architecture is None and num_classes is None:
        return
    config = folder / "pipeline.config"
    if not config.is_file():
        return  # checkpoint-only archives carry no config to compare
    from zoo.pipeline_config import load, model_config

    try:
        meta, model = model_config(load(config))
    except (ConfigError, KeyError, ValueError) as exc:  # ValueError: not UTF-8 text
        raise DamagedArchiveError(f"the archive of {name}: its pipeline.config cannot be read "
                                  f"({str(exc)[:200]}); the archive is damaged or not a zoo model "
                                  "archive") from None
    if meta_architecture is not None and meta != meta_architecture:
        raise _mismatch(name, "meta_architecture", meta_architecture, meta)
    if num_classes is not None:
        found = model.get("num_classes")
        if found is not None and found != num_classes:
            raise _mismatch(name, "num_classes", num_classes, found)
