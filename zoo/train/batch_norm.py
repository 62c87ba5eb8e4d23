"""BatchNorm statistics re-estimated on the training images after fine-tuning."""
from __future__ import annotations

from typing import Any

from .trainable import all_layers

__all__ = ["recalibrate_batch_norm"]


def recalibrate_batch_norm(net: Any, data: Any, *, batches: int = 25, batch_size: int = 16,
                           network_input: Any = None) -> int:
    """Replace every trainable BatchNorm layer's moving statistics by their average over ``batches``
    batches of un-augmented training images (a cumulative mean, layer after layer as the network
    runs); frozen BatchNorms keep theirs. ``network_input`` maps training images to the network's
    input (default: the CenterNet backbone's preprocessing). Returns the number of layers updated."""
    import keras

    layers = [l for l in all_layers(net.keras_model) if isinstance(l, keras.layers.BatchNormalization) and l.trainable]
    if not layers:
        return 0
    saved = [l.momentum for l in layers]
    to_input = network_input if network_input is not None else net.backbone.preprocess
    ds = data.tf_dataset(batch_size, shuffle=True, repeat=True, augmented=False)
    try:
        for i, batch in enumerate(ds.take(batches)):
            for layer in layers:
                layer.momentum = i / (i + 1.0)
            net.keras_model(to_input(batch["image"]), training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return len(layers)
