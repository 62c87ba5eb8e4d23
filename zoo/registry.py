"""The model registry: ``registry.yaml`` (and private registries) -> frozen, typed :class:`ModelSpec`.

The packaged registry lists every archive of the TF2 Detection Model Zoo plus the embedded demo
model. ``ODZOO_REGISTRY`` adds private registry files (paths separated by ``os.pathsep``), validated
the same way, so fine-tuned models load by name like zoo models. Every validation error names the
file, the entry and the field.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from . import settings
from .errors import RegistryError, UnknownModelError
from .labels import COCO_LABELS

PACKAGED_REGISTRY = Path(__file__).resolve().parent / "registry.yaml"
ENV_REGISTRY = "ODZOO_REGISTRY"

KINDS = ("detector", "checkpoint")
META_ARCHITECTURES = ("center_net", "ssd", "faster_rcnn")
OUTPUTS = ("boxes", "keypoints", "masks")
RESIZERS = ("keep_aspect_ratio", "fixed_shape")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_BUILTIN_LABEL_MAPS: dict[str, Mapping[int, str]] = {"coco": COCO_LABELS, "person": {1: "person"}}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How images are resized before the network (the pipeline.config ``image_resizer``)."""

    resizer: str
    height: int | None = None
    width: int | None = None
    min_dimension: int | None = None
    max_dimension: int | None = None
    pad_to_max_dimension: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """Network input (height, width) for square/padded inputs; (min, max) dimension otherwise."""
        if self.resizer == "fixed_shape":
            return int(self.height or 0), int(self.width or 0)
        side = int(self.max_dimension or 0)
        if self.pad_to_max_dimension:
            return side, side
        return int(self.min_dimension or 0), side


@dataclasses.dataclass(frozen=True)
class Published:
    """What the zoo publishes for a model, and what is known of how it was measured."""

    map_as_listed: str | None = None
    box_map: float | None = None
    keypoint_map: float | None = None
    mask_map: float | None = None
    speed_ms: float | None = None
    config_comment: str | None = None
    notes: str | None = None
    source: str | None = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One registry entry: an immutable description of a pretrained model archive."""

    name: str
    display_name: str
    aliases: tuple[str, ...]
    kind: str
    family: str
    meta_architecture: str | None
    feature_extractor: str | None
    input: InputSpec | None
    outputs: tuple[str, ...]
    num_classes: int | None
    max_detections: int | None
    label_map: Mapping[int, str] | None
    url: str
    archive_top: str
    tfhub: str | None
    sha256: str | None
    size_bytes: int | None
    license: str
    published: Published
    source: str

    @property
    def has_keypoints(self) -> bool:
        return "keypoints" in self.outputs

    @property
    def has_masks(self) -> bool:
        return "masks" in self.outputs

    def summary(self) -> dict[str, Any]:
        """Plain data for ``odzoo info --json`` and reports."""
        data = dataclasses.asdict(self)
        data["label_map"] = None if self.label_map is None else {str(k): v for k, v in self.label_map.items()}
        data["aliases"] = list(self.aliases)
        data["outputs"] = list(self.outputs)
        return data


# ----------------------------------------------------------------------------- parsing
_REQUIRED = (
    "name", "display_name", "kind", "family", "meta_architecture", "feature_extractor", "input",
    "outputs", "num_classes", "max_detections", "label_map", "url", "archive_top", "sha256",
)
_OPTIONAL = ("aliases", "tfhub", "size_bytes", "license", "published")
_TOP_KEYS = ("schema", "defaults", "models")
_DEFAULT_KEYS = ("license", "published_source")
_INPUT_KEYS = ("resizer", "height", "width", "min_dimension", "max_dimension", "pad_to_max_dimension")
_PUBLISHED_KEYS = tuple(f.name for f in dataclasses.fields(Published) if f.name != "source")


class _Entry:
    """Error context: which file, which entry."""

    def __init__(self, path: Path, index: int, name: str | None) -> None:
        self.path, self.index, self.name = path, index, name

    def fail(self, field: str, message: str) -> RegistryError:
        who = f"entry {self.name!r}" if self.name else f"entry #{self.index}"
        return RegistryError(f"{self.path}: {who}, field {field!r}: {message}")


def valid_name(name: str) -> bool:
    """Whether ``name`` can be a model name or alias (letters, digits, ``_ . -``)."""
    return bool(_NAME.fullmatch(name))


def _expect(ctx: _Entry, field: str, value: Any, types: type | tuple[type, ...], *, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ctx.fail(field, f"expected {_typename(types)}, got a boolean")
    if not isinstance(value, types):
        raise ctx.fail(field, f"expected {_typename(types)}, got {type(value).__name__} {value!r}")
    return value


def _typename(types: type | tuple[type, ...]) -> str:
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return types.__name__


def _positive_int(ctx: _Entry, field: str, value: Any, *, nullable: bool = True) -> int | None:
    value = _expect(ctx, field, value, int, nullable=nullable)
    if value is not None and value <= 0:
        raise ctx.fail(field, f"must be a positive integer, got {value}")
    return value


def _url(ctx: _Entry, value: Any, base: Path) -> str:
    value = _expect(ctx, "url", value, str)
    parsed = urlparse(value)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc or not parsed.path or parsed.path.endswith("/"):
            raise ctx.fail("url", f"malformed URL {value!r}: expected http(s)://host/path/file.tar.gz")
        return value
    if parsed.scheme == "file":
        if not parsed.path:
            raise ctx.fail("url", f"malformed file URL {value!r}")
        return value
    if parsed.scheme:
        raise ctx.fail("url", f"unsupported scheme {parsed.scheme!r} in {value!r}: use http(s)://, file:// or a path")
    # a path, relative to the registry file
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    return path.resolve().as_uri()


def _input(ctx: _Entry, value: Any) -> InputSpec | None:
    if value is None:
        return None
    _expect(ctx, "input", value, dict)
    unknown = set(value) - set(_INPUT_KEYS)
    if unknown:
        raise ctx.fail("input", f"unknown keys {sorted(unknown)}; allowed: {list(_INPUT_KEYS)}")
    resizer = value.get("resizer")
    if resizer not in RESIZERS:
        raise ctx.fail("input.resizer", f"must be one of {list(RESIZERS)}, got {resizer!r}")
    if resizer == "fixed_shape":
        for key in ("height", "width"):
            if key not in value:
                raise ctx.fail(f"input.{key}", "missing (required for fixed_shape)")
            _positive_int(ctx, f"input.{key}", value[key], nullable=False)
        return InputSpec(resizer, height=value["height"], width=value["width"])
    for key in ("min_dimension", "max_dimension"):
        if key not in value:
            raise ctx.fail(f"input.{key}", "missing (required for keep_aspect_ratio)")
        _positive_int(ctx, f"input.{key}", value[key], nullable=False)
    pad = _expect(ctx, "input.pad_to_max_dimension", value.get("pad_to_max_dimension", False), bool)
    return InputSpec(resizer, min_dimension=value["min_dimension"], max_dimension=value["max_dimension"],
                     pad_to_max_dimension=pad)


def _label_map(ctx: _Entry, value: Any, base: Path) -> Mapping[int, str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value in _BUILTIN_LABEL_MAPS:
            return _BUILTIN_LABEL_MAPS[value]
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_file():
            return _read_label_map_file(ctx, path)
        raise ctx.fail("label_map", f"{value!r} is neither {sorted(_BUILTIN_LABEL_MAPS)} nor an existing label map file")
    if isinstance(value, dict):
        out: dict[int, str] = {}
        for key, name in value.items():
            try:
                ident = int(key)
            except (TypeError, ValueError):
                raise ctx.fail("label_map", f"ids must be integers, got {key!r}") from None
            if ident <= 0 or not isinstance(name, str) or not name:
                raise ctx.fail("label_map", f"id {key!r} must be positive and have a non-empty name")
            out[ident] = name
        return out
    raise ctx.fail("label_map", f"expected 'coco', 'person', a mapping id -> name or a file, got {value!r}")


def _read_label_map_file(ctx: _Entry, path: Path) -> dict[int, str]:
    """A ``label_map.pbtxt`` (item { id: 1 name: "x" display_name: "y" }) as id -> name."""
    from .pipeline_config import parse

    try:
        msg = parse(path.read_text(encoding="utf-8"), str(path))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a registry problem here
        raise ctx.fail("label_map", f"cannot read {path}: {exc}") from exc
    out = {}
    for item in msg.all("item"):
        ident = item.get("id")
        name = item.get("display_name") or item.get("name")
        if isinstance(ident, int) and ident > 0 and name:
            out[ident] = str(name)
    if not out:
        raise ctx.fail("label_map", f"{path} has no 'item {{ id: N name: \"...\" }}' entries")
    return out


def _published(ctx: _Entry, value: Any, source: str | None) -> Published:
    if value is None:
        return Published(source=source)
    _expect(ctx, "published", value, dict)
    unknown = set(value) - set(_PUBLISHED_KEYS)
    if unknown:
        raise ctx.fail("published", f"unknown keys {sorted(unknown)}; allowed: {list(_PUBLISHED_KEYS)}")
    for key in ("box_map", "keypoint_map", "mask_map", "speed_ms"):
        v = value.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
            raise ctx.fail(f"published.{key}", f"expected a non-negative number or null, got {v!r}")
    args = {k: value.get(k) for k in _PUBLISHED_KEYS}
    for key in ("box_map", "keypoint_map", "mask_map", "speed_ms"):
        if args[key] is not None:
            args[key] = float(args[key])
    return Published(**args, source=source)


def _parse_entry(raw: Any, ctx: _Entry, defaults: Mapping[str, Any], base: Path) -> ModelSpec:
    if not isinstance(raw, dict):
        raise RegistryError(f"{ctx.path}: entry #{ctx.index} must be a mapping, got {type(raw).__name__}")
    ctx.name = raw.get("name") if isinstance(raw.get("name"), str) else None
    unknown = set(raw) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise ctx.fail(sorted(unknown)[0], f"unknown field; allowed fields: {sorted(_REQUIRED + _OPTIONAL)}")
    for field in _REQUIRED:
        if field not in raw:
            raise ctx.fail(field, "missing (write null where the value is unknown)")
    name = _expect(ctx, "name", raw["name"], str)
    if not _NAME.match(name):
        raise ctx.fail("name", f"{name!r} is not a valid model name (letters, digits, _ . -)")
    aliases = raw.get("aliases") or []
    _expect(ctx, "aliases", aliases, list)
    for alias in aliases:
        if not isinstance(alias, str) or not _NAME.match(alias):
            raise ctx.fail("aliases", f"{alias!r} is not a valid alias")
    kind = raw["kind"]
    if kind not in KINDS:
        raise ctx.fail("kind", f"must be one of {list(KINDS)}, got {kind!r}")
    meta = raw["meta_architecture"]
    if meta is not None and meta not in META_ARCHITECTURES:
        raise ctx.fail("meta_architecture", f"must be one of {list(META_ARCHITECTURES)} or null, got {meta!r}")
    if kind == "detector" and meta is None:
        raise ctx.fail("meta_architecture", "a detector needs a meta-architecture")
    outputs = _expect(ctx, "outputs", raw["outputs"], list)
    for out in outputs:
        if out not in OUTPUTS:
            raise ctx.fail("outputs", f"{out!r} is not one of {list(OUTPUTS)}")
    sha = _expect(ctx, "sha256", raw["sha256"], str, nullable=True)
    if sha is not None and not _SHA256.match(sha):
        raise ctx.fail("sha256", f"{sha!r} is not 64 lowercase hex digits")
    tfhub = _expect(ctx, "tfhub", raw.get("tfhub"), str, nullable=True)
    if tfhub is not None and not urlparse(tfhub).scheme:
        raise ctx.fail("tfhub", f"{tfhub!r} is not a URL")
    archive_top = _expect(ctx, "archive_top", raw["archive_top"], str)
    if not archive_top or "/" in archive_top or archive_top in (".", ".."):
        raise ctx.fail("archive_top", f"{archive_top!r} must be a single folder name")
    if kind == "detector":
        for field in ("input", "num_classes", "max_detections", "label_map"):
            if raw[field] is None:
                raise ctx.fail(field, "a detector needs it (null only for checkpoints)")
    return ModelSpec(
        name=name,
        display_name=_expect(ctx, "display_name", raw["display_name"], str),
        aliases=tuple(aliases),
        kind=kind,
        family=_expect(ctx, "family", raw["family"], str),
        meta_architecture=meta,
        feature_extractor=_expect(ctx, "feature_extractor", raw["feature_extractor"], str, nullable=True),
        input=_input(ctx, raw["input"]),
        outputs=tuple(outputs),
        num_classes=_positive_int(ctx, "num_classes", raw["num_classes"]),
        max_detections=_positive_int(ctx, "max_detections", raw["max_detections"]),
        label_map=_label_map(ctx, raw["label_map"], base),
        url=_url(ctx, raw["url"], base),
        archive_top=archive_top,
        tfhub=tfhub,
        sha256=sha,
        size_bytes=_positive_int(ctx, "size_bytes", raw.get("size_bytes")),
        license=_expect(ctx, "license", raw.get("license", defaults.get("license", "unknown")), str),
        published=_published(ctx, raw.get("published"), defaults.get("published_source")),
        source=str(ctx.path),
    )


def parse_registry_file(path: str | os.PathLike[str]) -> list[ModelSpec]:
    """Read and validate one registry file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RegistryError(f"{path}: is a folder, not a registry file; name the registry .yaml file "
                            f"(e.g. {path / 'registry.yaml'}) in {ENV_REGISTRY}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read registry file ({exc.strerror}); check {ENV_REGISTRY}") from exc
    except UnicodeDecodeError:
        raise RegistryError(f"{path}: not a text file (registries are UTF-8 YAML); check {ENV_REGISTRY}") from None
    try:
        data = _safe_yaml(text)
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict) or "models" not in data:
        raise RegistryError(f"{path}: a registry is a mapping with a 'models:' list")
    unknown = set(data) - set(_TOP_KEYS)
    if unknown:
        raise RegistryError(f"{path}: unknown top-level keys {sorted(unknown)}; allowed: {list(_TOP_KEYS)}")
    if data.get("schema", 1) != 1:
        raise RegistryError(f"{path}: schema {data.get('schema')!r} is not supported (this odzoo reads schema 1)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - set(_DEFAULT_KEYS):
        raise RegistryError(f"{path}: 'defaults' may only hold {list(_DEFAULT_KEYS)}")
    models = data["models"]
    if not isinstance(models, list):
        raise RegistryError(f"{path}: 'models' must be a list of entries")
    base = path.resolve().parent
    return [_parse_entry(raw, _Entry(path, i, None), defaults, base) for i, raw in enumerate(models)]


def _safe_yaml(text: str) -> Any:
    """The document ``text`` through PyYAML's safe loader: libyaml's C one where PyYAML has it (the
    shipped registry parses in about a fifth of the time, which every cold start pays), else the
    pure-Python one. Both build plain Python values only."""
    loader_class = getattr(yaml, "CSafeLoader", None)
    if loader_class is None:
        return yaml.safe_load(text)
    loader = loader_class(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the YAML parser found and where."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


# ----------------------------------------------------------------------------- the registry
class Registry:
    """Specs by canonical name, with aliases; names and aliases are unique across all files."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._names: dict[str, str] = {}
        for spec in specs:
            for key in (spec.name, *spec.aliases):
                if key in self._names:
                    other = self._specs[self._names[key]]
                    raise RegistryError(
                        f"{spec.source}: entry {spec.name!r}: name or alias {key!r} is already used by "
                        f"{other.name!r} ({other.source}); names and aliases must be unique"
                    )
                self._names[key] = spec.name
            self._specs[spec.name] = spec

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._names

    def get(self, name: str) -> ModelSpec:
        if not isinstance(name, str):
            raise UnknownModelError(f"a model name is a string, not {type(name).__name__} {name!r}")
        if name in self._names:
            return self._specs[self._names[name]]
        close = self.suggestions(name)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Run 'odzoo list' to see every model.")

    def suggestions(self, name: object, limit: int = 5) -> list[str]:
        """Names and aliases close to ``name``: containing it, or similar spellings (typos)."""
        if not isinstance(name, str) or not name.strip():
            return []
        lowered = {k.lower(): k for k in self._names}
        needle = name.strip().lower()
        similar = difflib.get_close_matches(needle, list(lowered), n=limit, cutoff=0.75)
        if similar:  # keep the spellings about as close as the closest one
            best = difflib.SequenceMatcher(None, needle, similar[0]).ratio()
            similar = [k for k in similar if difflib.SequenceMatcher(None, needle, k).ratio() >= best - 0.04]
        found = [lowered[k] for k in similar]
        found += [k for k in self._names if needle in k.lower() and k not in found]
        return found[:limit]

    def list(self, pattern: str | None = None, **filters: Any) -> list[ModelSpec]:
        out = []
        for spec in self._specs.values():
            if pattern and not any(fnmatch.fnmatchcase(k, pattern) for k in (spec.name, *spec.aliases)):
                continue
            if all(_matches(spec, key, want) for key, want in filters.items()):
                out.append(spec)
        return out


def _matches(spec: ModelSpec, key: str, want: Any) -> bool:
    if key == "architecture":
        return want in (spec.meta_architecture, spec.family)
    if key == "outputs":
        wanted = [want] if isinstance(want, str) else list(want)
        return all(w in spec.outputs for w in wanted)
    if not hasattr(spec, key):
        raise TypeError(f"unknown filter {key!r}; filter on a ModelSpec field, 'architecture' or 'outputs'")
    value = getattr(spec, key)
    if isinstance(want, str) and isinstance(value, str):
        return fnmatch.fnmatchcase(value, want)
    return value == want


def registry_files() -> list[Path]:
    """The packaged registry followed by the files named in ``ODZOO_REGISTRY``."""
    return [PACKAGED_REGISTRY, *settings.registry_files()]


@functools.lru_cache(maxsize=8)
def _load(files: tuple[tuple[str, float], ...]) -> Registry:
    specs: list[ModelSpec] = []
    for path, _mtime in files:
        specs.extend(parse_registry_file(path))
    return Registry(specs)


def registry() -> Registry:
    """The current registry (re-read when a registry file or ``ODZOO_REGISTRY`` changes)."""
    keyed = []
    for path in registry_files():
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = -1.0  # parse_registry_file reports the missing file with its name
        keyed.append((str(path), mtime))
    return _load(tuple(keyed))


def get(name: str) -> ModelSpec:
    """The spec of a canonical name or alias; :class:`UnknownModelError` with suggestions otherwise."""
    return registry().get(name)


def list_models(pattern: str | None = None, **filters: Any) -> list[ModelSpec]:
    """Specs whose name or an alias matches ``pattern`` (fnmatch wildcards), filtered by fields.

    Filters: any ModelSpec field (``family="centernet"``, ``kind="detector"``), ``architecture``
    (meta-architecture or family) and ``outputs`` (one output or a list that must all be present).
    """
    return registry().list(pattern, **filters)
