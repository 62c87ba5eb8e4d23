"""The ``hub`` backend: a TF Hub detection model (``tensorflow_hub.load``) by handle or local folder.

Same outputs as the zoo's SavedModel (the Hub models are those exports). A handle may be a
``https://tfhub.dev/...`` address (needs network, cached by tensorflow_hub in ``TFHUB_CACHE_DIR``),
a mirrored handle, or a local folder holding ``saved_model.pb``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DownloadError, UnsupportedModelError
from .saved_model_backend import serving_outputs

__all__ = ["HubBackend"]


class HubBackend:
    """``tensorflow_hub.load(handle)`` behind the common interface."""

    name = "hub"
    keras_model = None

    def __init__(self, handle: str) -> None:
        try:
            import tensorflow_hub as hub
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise UnsupportedModelError(
                "backend='hub' needs the tensorflow-hub package (pip install tensorflow-hub)"
            ) from exc
        local = Path(handle).expanduser()
        if local.is_dir() and (local / "saved_model").is_dir() and not (local / "saved_model.pb").is_file():
            local = local / "saved_model"
        self.handle = str(local) if local.is_dir() else handle
        try:
            self._model = hub.load(self.handle)
        except Exception as exc:  # tensorflow_hub raises many types for unreachable handles
            raise DownloadError(
                f"cannot load TF Hub model {handle!r}: {exc}. Without network access pass a local folder "
                "(hub_handle='/path/to/saved_model') or set TFHUB_CACHE_DIR to a populated cache"
            ) from exc
        if not callable(self._model):
            raise UnsupportedModelError(f"TF Hub model {handle!r} is not callable")
        self._batch_dim = self._input_batch_dim()
        self.supports_batch = self._batch_dim != 1

    def _input_batch_dim(self) -> int | None:
        sig = getattr(self._model, "signatures", {}).get("serving_default")
        if sig is None:
            return 1
        _, kwargs = sig.structured_input_signature
        if len(kwargs) != 1:
            return 1
        (spec,) = kwargs.values()
        return spec.shape[0] if spec.shape.rank else None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """``[B, H, W, 3]`` uint8 -> the model's outputs as numpy arrays."""
        return serving_outputs(self._model, batch, self._batch_dim)
