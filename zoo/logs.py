"""What the ``odzoo`` command shows of its dependencies' logging: nothing, unless asked.

TensorFlow writes C++ log lines (oneDNN and CUDA notices, CPU feature hints) straight to file
descriptor 2 while it is imported, and later through ``TF_CPP_MIN_LOG_LEVEL``; Python libraries
add ``logging`` records (``tensorflow``, ``absl``) and warnings. :func:`quiet_dependencies`
silences all of them for the duration of a command; with ``--verbose`` or ``ODZOO_LOG=debug|info``
nothing is touched. The library (``import zoo``) never changes any of this.
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

#: Python loggers of dependencies kept to errors.
DEPENDENCY_LOGGERS: tuple[str, ...] = ("tensorflow", "absl", "h5py", "jax")
#: Modules whose import prints C++ log lines on stderr.
NOISY_IMPORTS: tuple[str, ...] = ("tensorflow",)


@contextlib.contextmanager
def silenced_stderr_fd() -> Iterator[None]:
    """Route file descriptor 2 to a temporary file; replay what was written if the block fails."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2: nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader with file descriptor 2 silenced."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.inner
        if module.__spec__ is not None:
            module.__spec__.loader = self.inner
        with silenced_stderr_fd():
            self.inner.exec_module(module)


class _QuietImporter(importlib.abc.MetaPathFinder):
    """Finds :data:`NOISY_IMPORTS` through the other finders and loads them quietly."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in NOISY_IMPORTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


@contextlib.contextmanager
def quiet_dependencies() -> Iterator[None]:
    """Silence dependency logs and warnings inside the block (restored afterwards)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read by TensorFlow's C++ logging at each line
    importer = _QuietImporter()
    sys.meta_path.insert(0, importer)
    levels = {name: logging.getLogger(name).level for name in DEPENDENCY_LOGGERS}
    for name in DEPENDENCY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"zoo(\.|$)")
            yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(importer)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
