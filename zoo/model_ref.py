"""What a user may name a model by, classified in one place: a registry entry (name or alias), an
http(s)/file URL, a local archive, or a model folder. ``zoo.load``, ``zoo.download``, ``odzoo``'s
commands and the benchmark all read their model argument through :func:`parse_model_ref`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import NotCachedError, UnknownModelError

if TYPE_CHECKING:
    from .registry import ModelSpec

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")
URL_SCHEMES = ("http", "https", "file")


@dataclass(frozen=True)
class ModelRef:
    """A classified model argument: exactly one of ``spec``, ``url`` and ``path`` is set."""

    text: str
    spec: ModelSpec | None = None
    url: str | None = None
    path: Path | None = None

    @property
    def source(self) -> ModelSpec | str | Path:
        """What :func:`zoo.hub.fetch` takes for this reference."""
        if self.spec is not None:
            return self.spec
        return self.url if self.url is not None else self.path  # type: ignore[return-value]


def parse_model_ref(value: Any) -> ModelRef:
    """Classify ``value``: a ModelSpec; a URL; text that can only be a path (it holds a path
    separator or ends like an archive), which must exist (else NotCachedError); a registry name or
    alias; else a file or folder of that name here. An unknown name raises UnknownModelError with
    suggestions."""
    if hasattr(value, "url") and hasattr(value, "name") and not isinstance(value, (str, os.PathLike)):
        return ModelRef(text=str(value.name), spec=value)
    if isinstance(value, os.PathLike):
        return ModelRef(text=os.fspath(value), path=Path(value).expanduser())
    if not isinstance(value, str) or not value.strip():
        raise UnknownModelError(f"expected a model name, URL, archive or folder, got {value!r}")
    if urlsplit(value).scheme in URL_SCHEMES:
        return ModelRef(text=value, url=value)
    path = Path(value).expanduser()
    if os.sep in value or value.endswith(ARCHIVE_SUFFIXES):
        if not path.exists():
            raise NotCachedError(f"{value}: no such file or folder")
        return ModelRef(text=value, path=path)
    from .registry import get

    try:
        return ModelRef(text=value, spec=get(value))
    except UnknownModelError:
        if path.exists():  # a plain name that is no registry entry: a folder or file here
            return ModelRef(text=value, path=path)
        raise
