"""How Keras 2 named variables in the zoo checkpoints, for building the variable maps of a restore.

* :func:`variable_attributes` - ``(attribute, variable)`` pairs of one weighted layer, with the
  attribute names Keras 2 wrote (``depthwise_kernel`` where Keras 3 says ``kernel``).
* :func:`layer_items` - the same under a checkpoint prefix.
* :func:`layers_with_weights` - the layers Keras 2 numbered ``layer_with_weights-N``.
* :func:`numbered_items` - every weighted layer of a model under ``{prefix}/layer_with_weights-N``.
* :func:`nested_base_checkpoint_map` - extractors that nest a base network inside their own model.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "layer_items",
    "layers_with_weights",
    "nested_base_checkpoint_map",
    "numbered_items",
    "variable_attributes",
]


def variable_attributes(layer: keras.layers.Layer) -> list[tuple[str, keras.Variable]]:
    """``(attribute, variable)`` pairs of one weighted layer, named as Keras 2 checkpoints name them.

    Keras 2 wrote ``depthwise_kernel`` for depthwise convolutions where Keras 3 calls the variable
    ``kernel``; every other attribute keeps its variable's name.
    """
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        pairs = [("gamma", layer.gamma), ("beta", layer.beta),
                 ("moving_mean", layer.moving_mean), ("moving_variance", layer.moving_variance)]
        return [(name, var) for name, var in pairs if var is not None]
    if isinstance(layer, keras.layers.SeparableConv2D):
        pairs = [("depthwise_kernel", layer.depthwise_kernel), ("pointwise_kernel", layer.pointwise_kernel)]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = [("depthwise_kernel", layer.kernel)]
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose, keras.layers.Dense)):
        pairs = [("kernel", layer.kernel)]
    else:
        raise TypeError(f"no checkpoint attribute names known for layer {layer.name!r} ({type(layer).__name__})")
    if layer.use_bias:
        pairs.append(("bias", layer.bias))
    return pairs


def layer_items(prefix: str, layer: keras.layers.Layer) -> dict[str, keras.Variable]:
    """``{prefix}/{attribute}`` -> variable for one weighted layer (Keras 2 attribute names)."""
    return {f"{prefix}/{attr}": var for attr, var in variable_attributes(layer)}


def layers_with_weights(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of a Keras model that own weights, in the order Keras 2 numbered them.

    Keras 2 checkpoints name sub-objects ``layer_with_weights-N``: the N-th entry of the model's
    ``layers`` list that has at least one weight. Functional models list layers in creation
    (topological) order, so a Keras 3 rebuild with the same construction order gets the same N.
    """
    return [layer for layer in model.layers if layer.weights]


def numbered_items(prefix: str, layers: Iterable[keras.layers.Layer]) -> dict[str, keras.Variable]:
    """``{prefix}/layer_with_weights-N/{attribute}`` -> variable, N counting ``layers`` in order."""
    out: dict[str, keras.Variable] = {}
    for n, layer in enumerate(layers):
        out.update(layer_items(f"{prefix}/layer_with_weights-{n}", layer))
    return out


def nested_base_checkpoint_map(model: keras.Model, base_name: str) -> dict[str, keras.Variable]:
    """Checkpoint keys of an extractor that nests a base network as one layer of its own model.

    The original writes the base network's weights as ``_base_model/layer_with_weights-N/...`` and
    the extractor's own layers (FPN, upsampling) as ``_feature_extractor_model/layer_with_weights-N/...``,
    where N counts the extractor model's weighted layers *including* the nested base at its place.
    """
    base = model.get_layer(base_name)
    mapping = numbered_items("_base_model", layers_with_weights(base))
    for n, layer in enumerate(layers_with_weights(model)):
        if layer is not base:
            mapping.update(layer_items(f"_feature_extractor_model/layer_with_weights-{n}", layer))
    return mapping
