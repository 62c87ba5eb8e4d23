"""Read a ``pipeline.config`` (protobuf text format) into plain Python data, without the OD API protos.

``parse(text)`` returns nested dicts. Because the schema is not known here, every field maps to a
*list* of its occurrences internally; :class:`Message` hides that: ``msg["model"]`` gives the first
occurrence, ``msg.all("data_augmentation_options")`` gives every one, ``msg.get(path, default)``
walks a dotted path. Scalars come back as ``int``, ``float``, ``bool``, ``str`` (quoted strings) or
:class:`Enum` (bare identifiers such as ``SIGMOID``, a ``str`` subclass).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:inf(?:inity)?|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)(?![\w.])
  | (?P<ident>[A-Za-z_][\w.\-/]*)
  | (?P<punct>[{}:<>\[\],;])
    """,
    re.VERBOSE,
)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


class Enum(str):
    """A bare identifier value such as ``SIGMOID`` (compares equal to its text)."""


class Message:
    """One protobuf message: field name -> list of values (scalars or Messages)."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        self._fields.setdefault(name, []).append(value)

    def __contains__(self, name: object) -> bool:
        return name in self._fields

    def __getitem__(self, name: str) -> Any:
        try:
            return self._fields[name][0]
        except KeyError:
            raise KeyError(f"pipeline.config has no field {name!r} here (fields: {sorted(self._fields)})") from None

    def all(self, name: str) -> list[Any]:
        """Every occurrence of a repeated field (empty list when absent)."""
        return list(self._fields.get(name, []))

    def keys(self) -> list[str]:
        return list(self._fields)

    def oneof(self) -> tuple[str, Message]:
        """The single field of a oneof wrapper such as ``image_resizer { fixed_shape_resizer {...} }``."""
        if len(self._fields) != 1:
            raise ConfigError(f"expected exactly one field, found {sorted(self._fields)}")
        name = next(iter(self._fields))
        return name, self._fields[name][0]

    def get(self, path: str, default: Any = None) -> Any:
        """Walk a dotted path of first occurrences: ``cfg.get("model.center_net.num_classes")``."""
        node: Any = self
        for part in path.split("."):
            if not isinstance(node, Message) or part not in node:
                return default
            node = node[part]
        return node

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts; a field that occurs more than once becomes a list."""
        out: dict[str, Any] = {}
        for name, values in self._fields.items():
            conv = [v.to_dict() if isinstance(v, Message) else v for v in values]
            out[name] = conv[0] if len(conv) == 1 else conv
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __repr__(self) -> str:
        return f"Message({self.to_dict()!r})"


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _scalar(kind: str, token: str) -> Any:
    if kind == "string":
        return _unquote(token)
    if kind == "number":
        text = token.rstrip("fF") if not token.lower().endswith("inf") else token
        low = text.lower().lstrip("+-")
        if low in ("inf", "infinity", "nan"):
            return float(text)
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        return float(text)
    if token in ("true", "True"):
        return True
    if token in ("false", "False"):
        return False
    return Enum(token)


def _tokens(text: str, source: str) -> list[tuple[str, str, int]]:
    out = []
    pos = 0
    line = 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConfigError(f"{source}:{line}: cannot read {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        tok = m.group()
        if kind != "ws":
            out.append((kind, tok, line))
        line += tok.count("\n")
        pos = m.end()
    return out


def parse(text: str, source: str = "<pipeline.config>") -> Message:
    """Parse protobuf text format into a :class:`Message`; errors name the source and line."""
    toks = _tokens(text, source)
    pos = 0

    def expect_name() -> tuple[str, int]:
        nonlocal pos
        kind, tok, line = toks[pos]
        if kind != "ident":
            raise ConfigError(f"{source}:{line}: expected a field name, found {tok!r}")
        pos += 1
        return tok, line

    def parse_message(closing: str | None) -> Message:
        nonlocal pos
        msg = Message()
        while True:
            if pos >= len(toks):
                if closing is None:
                    return msg
                raise ConfigError(f"{source}: unexpected end of file, missing {closing!r}")
            kind, tok, line = toks[pos]
            if kind == "punct" and tok == closing:
                pos += 1
                return msg
            if kind == "punct" and tok in ",;":
                pos += 1
                continue
            name, line = expect_name()
            if pos >= len(toks):
                raise ConfigError(f"{source}:{line}: field {name!r} has no value")
            kind, tok, _ = toks[pos]
            if tok == ":":
                pos += 1
                kind, tok, _ = toks[pos] if pos < len(toks) else ("", "", line)
            if tok in ("{", "<"):
                pos += 1
                msg.add(name, parse_message("}" if tok == "{" else ">"))
            elif tok == "[":
                pos += 1
                while pos < len(toks) and toks[pos][1] != "]":
                    k, t, ln = toks[pos]
                    if t == ",":
                        pos += 1
                        continue
                    if t in ("{", "<"):
                        pos += 1
                        msg.add(name, parse_message("}" if t == "{" else ">"))
                        continue
                    if k not in ("string", "number", "ident"):
                        raise ConfigError(f"{source}:{ln}: bad list item {t!r} in {name!r}")
                    msg.add(name, _scalar(k, t))
                    pos += 1
                if pos >= len(toks):
                    raise ConfigError(f"{source}:{line}: unterminated list in {name!r}")
                pos += 1
            elif kind in ("string", "number", "ident"):
                value = _scalar(kind, tok)
                pos += 1
                # adjacent string literals concatenate
                while kind == "string" and pos < len(toks) and toks[pos][0] == "string":
                    value += _unquote(toks[pos][1])
                    pos += 1
                msg.add(name, value)
            else:
                raise ConfigError(f"{source}:{line}: field {name!r} has no value (found {tok!r})")

    return parse_message(None)


def load(path: str | os.PathLike[str]) -> Message:
    """Read and parse a pipeline.config file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read pipeline config {os.fspath(path)!r}: {exc.strerror}") from exc
    return parse(text, os.fspath(path))


def model_config(cfg: Message) -> tuple[str, Message]:
    """``("center_net" | "ssd" | "faster_rcnn", <that message>)`` from a parsed pipeline config."""
    if "model" not in cfg:
        raise ConfigError("pipeline.config has no 'model { ... }' block")
    return cfg["model"].oneof()
