"""Registry of CenterNet backbones (feature extractors), keyed by the config's ``feature_extractor.type``.

The contract
============
A backbone module registers a *factory* under every ``type`` string it implements::

    register_backbone("resnet_v1_50_fpn", factory)

``factory(feature_extractor_config: Message) -> Backbone`` receives the ``center_net.feature_extractor``
message of the pipeline.config (``type``, ``channel_means``, ``channel_stds``, ``bgr_ordering``,
``use_separable_conv``, ``depth_multiplier``... whatever the extractor reads) and returns an object
satisfying :class:`Backbone`:

``preprocess(images) -> tf.Tensor``
    ``images`` is a float32 ``[B, H, W, 3]`` tensor of *resized* RGB values in 0..255 (the image
    resizer has already run, padding included). Returns the network input exactly as the original
    feature extractor's ``preprocess`` computes it: channel means / stds from the config, BGR
    ordering when the config asks for it, or the extractor's own fixed normalization. Pure tensor
    ops (it runs inside a ``tf.function`` over dynamic shapes).

``build() -> keras.Model``
    A new functional Keras model mapping the preprocessed ``[B, H, W, 3]`` input (``shape=(None,
    None, 3)``) to a *list* of stride-4 feature maps, one per head stack (hourglass_104 has 2; the
    others 1). The CenterNet meta-architecture applies its prediction heads to every element.
    Inference-time quirks of the original (e.g. BatchNorm using batch statistics) are the
    backbone's business and must be reproduced inside this model.

``checkpoint_map(model) -> dict[str, keras.Variable]``
    For the model returned by ``build()``: every variable of that model, keyed by its checkpoint
    key *relative to* ``"model/_feature_extractor/"`` and *without* the trailing
    ``"/.ATTRIBUTES/VARIABLE_VALUE"``, e.g. ``"_base_model/layer_with_weights-3/gamma"`` or
    ``"_feature_extractor_model/layer_with_weights-1/kernel"``. The restore is strict: every
    checkpoint key under ``model/_feature_extractor/`` must appear in this map and every variable
    of the model must be in it, with equal shapes.

Optional attributes read with defaults: ``stride`` (int, default 4), ``name`` (str).

Modules that implement backbones are imported lazily by :func:`get_backbone` (see ``_MODULES``), so
importing this package stays cheap and a broken or missing module only affects its own types.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ...errors import UnsupportedModelError

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

    from ...pipeline_config import Message

__all__ = [
    "Backbone",
    "BackboneFactory",
    "available_backbones",
    "get_backbone",
    "layers_with_weights",
    "nested_base_checkpoint_map",
    "register_backbone",
]


@runtime_checkable
class Backbone(Protocol):
    """A CenterNet feature extractor: see the module docstring for the full contract."""

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """Resized float RGB 0..255 ``[B,H,W,3]`` -> the network's input."""
        ...

    def build(self) -> keras.Model:
        """A fresh functional model: preprocessed ``[B,H,W,3]`` -> list of stride-4 feature maps."""
        ...

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        ...


BackboneFactory = Callable[["Message"], Backbone]

_REGISTRY: dict[str, BackboneFactory] = {}

# feature_extractor type -> module (relative to this package) that registers it when imported.
_MODULES: dict[str, str] = {
    "resnet_v1_50_fpn": "resnet_v1_fpn",
    "resnet_v1_101_fpn": "resnet_v1_fpn",
    "resnet_v2_50": "resnet_v2",
    "resnet_v2_101": "resnet_v2",
    "hourglass_104": "hourglass",
    "hourglass_52": "hourglass",
    "mobilenet_v2_fpn": "mobilenet_v2_fpn",
    "mobilenet_v2_fpn_sep_conv": "mobilenet_v2_fpn",
}


def register_backbone(feature_extractor_type: str, factory: BackboneFactory) -> None:
    """Make ``factory`` the implementation of ``feature_extractor_type`` (replaces an earlier one)."""
    _REGISTRY[str(feature_extractor_type)] = factory


def _import_for(feature_extractor_type: str) -> None:
    module = _MODULES.get(feature_extractor_type)
    if module is None or feature_extractor_type in _REGISTRY:
        return
    try:
        importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{module}":
            raise


def available_backbones() -> list[str]:
    """Every feature_extractor type that has an implementation (imports the known modules)."""
    for name in list(_MODULES):
        _import_for(name)
    return sorted(_REGISTRY)


def get_backbone(feature_extractor_config: Message | str) -> Backbone:
    """Build the backbone for a ``feature_extractor`` message (or a bare type string)."""
    if isinstance(feature_extractor_config, str):
        from ...pipeline_config import parse

        feature_extractor_config = parse(f'type: "{feature_extractor_config}"')
    kind = str(feature_extractor_config.get("type", ""))
    _import_for(kind)
    factory = _REGISTRY.get(kind)
    if factory is None:
        known = ", ".join(available_backbones()) or "none"
        raise UnsupportedModelError(
            f"CenterNet feature extractor {kind!r} has no Keras implementation (implemented: {known}); "
            "load the model with backend='saved_model' to run the archive's exported SavedModel instead"
        )
    return factory(feature_extractor_config)


def layers_with_weights(model: Any) -> list[Any]:
    """The layers of a Keras model that own weights, in the order Keras 2 numbered them.

    Keras 2 checkpoints name sub-objects ``layer_with_weights-N``: the N-th entry of the model's
    ``layers`` list that has at least one weight. Functional models list layers in creation
    (topological) order, so a Keras 3 rebuild with the same construction order gets the same N.
    """
    return [layer for layer in model.layers if layer.weights]


def nested_base_checkpoint_map(model: Any, base_name: str) -> dict[str, Any]:
    """Checkpoint keys of an extractor that nests a base network as one layer of its own model.

    The original writes the base network's weights as ``_base_model/layer_with_weights-N/...`` and
    the extractor's own layers (FPN, upsampling) as ``_feature_extractor_model/layer_with_weights-N/...``,
    where N counts the extractor model's weighted layers *including* the nested base at its place.
    """
    from ..layers import variable_attributes

    mapping: dict[str, Any] = {}
    base = model.get_layer(base_name)
    for n, layer in enumerate(layers_with_weights(base)):
        for attr, var in variable_attributes(layer):
            mapping[f"_base_model/layer_with_weights-{n}/{attr}"] = var
    for n, layer in enumerate(layers_with_weights(model)):
        if layer is base:
            continue
        for attr, var in variable_attributes(layer):
            mapping[f"_feature_extractor_model/layer_with_weights-{n}/{attr}"] = var
    return mapping
