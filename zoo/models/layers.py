"""Keras layers and layer settings shared by every meta-architecture.

* :class:`FusedBatchNormalization` - BatchNorm through TensorFlow's fused kernel at inference, as
  Keras 2 ran it; :func:`with_fused_batch_norm` swaps it into a built functional model.
* :class:`ConvHyperparams` - what a ``conv_hyperparams`` message configures (activation, BatchNorm,
  bias rule) and the conv blocks built from it.
* :func:`make_divisible` - MobileNet / EfficientNet channel rounding.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from ..errors import ConfigError
from .checkpoint_layout import layer_items

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline_config import Message

__all__ = [
    "ConvHyperparams",
    "FusedBatchNormalization",
    "make_divisible",
    "with_fused_batch_norm",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %."""
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@keras.saving.register_keras_serializable(package="odzoo")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that runs inference through TensorFlow's fused kernel, as Keras 2 did.

    The fused kernel rounds differently from Keras 3's composed ops: on SSD ResNet50 FPN the composed
    form lands about 1e-4 (relative L2) from the original's outputs, the fused one about 1e-5; on
    Faster R-CNN ResNet50 it keeps the stride-16 features about 7x closer.
    Training, and inputs the kernel does not take (rank other than 4, channels not last, float64),
    use the Keras 3 implementation.
    """

    _FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        if (training and self.trainable) or len(inputs.shape) != 4 or self.axis not in (-1, 3) \
                or inputs.dtype not in self._FUSED_DTYPES:
            return super().call(inputs, training=training, mask=mask)
        channels = int(inputs.shape[-1])
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset,
            mean=tf.cast(self.moving_mean, tf.float32), variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon, is_training=False,
        )
        return outputs


def with_fused_batch_norm(model: keras.Model) -> keras.Model:
    """A fresh copy of a functional ``model`` (same layers, names and order, new weights) whose
    BatchNormalization layers are :class:`FusedBatchNormalization`."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    return keras.models.clone_model(model, clone_function=clone)


@dataclasses.dataclass(frozen=True)
class ConvHyperparams:
    """What the layers read from a ``conv_hyperparams`` message: activation, BatchNorm, bias rule.

    ``bn_momentum`` is not read from configs (inference ignores it); extractors that rebuild a
    network with its own training momentum set it.
    """

    activation: str = "RELU"
    batch_norm: bool = False
    bn_epsilon: float = 0.001
    bn_scale: bool = False
    bn_center: bool = True
    force_use_bias: bool = False
    bn_momentum: float = 0.99

    @classmethod
    def from_config(cls, msg: Message | None) -> ConvHyperparams:
        """Read a ``conv_hyperparams`` message (protobuf defaults for absent fields)."""
        if msg is None:
            return cls()
        activation = str(msg.get("activation", "RELU")).upper()
        if activation not in ("NONE", "RELU", "RELU_6", "SWISH"):
            raise ConfigError(f"conv_hyperparams.activation {activation} is not supported (NONE, RELU, RELU_6, SWISH)")
        bn = msg["batch_norm"] if "batch_norm" in msg else None
        if "sync_batch_norm" in msg:
            bn = msg["sync_batch_norm"]
        return cls(
            activation=activation,
            batch_norm=bn is not None,
            bn_epsilon=float(np.float32(bn.get("epsilon", 0.001))) if bn is not None else 0.001,
            bn_scale=bool(bn.get("scale", False)) if bn is not None else False,
            bn_center=bool(bn.get("center", True)) if bn is not None else True,
            force_use_bias=bool(msg.get("force_use_bias", False)),
        )

    def use_bias(self, requested: bool | None = None) -> bool:
        """Whether a conv gets a bias: forced, else as requested, else unless a centred BatchNorm follows."""
        if self.force_use_bias:
            return True
        if requested is not None:
            return requested
        return not (self.batch_norm and self.bn_center)

    def batch_norm_layer(self, name: str) -> keras.layers.BatchNormalization:
        """A (fused at inference) BatchNormalization with the configured epsilon, using the moving statistics."""
        return FusedBatchNormalization(
            epsilon=self.bn_epsilon, momentum=self.bn_momentum, scale=self.bn_scale, center=self.bn_center, name=name
        )

    def activation_layer(self, name: str) -> keras.layers.Layer | None:
        """The configured activation as a layer (None for ``NONE``)."""
        if self.activation == "RELU":
            return keras.layers.ReLU(name=name)
        if self.activation == "RELU_6":
            return keras.layers.ReLU(6.0, name=name)
        if self.activation == "SWISH":
            return keras.layers.Activation("swish", name=name)
        return None

    def normalize(self, x: Any, name: str) -> Any:
        """BatchNorm ``name`` when configured (else ``x`` unchanged)."""
        return self.batch_norm_layer(name)(x) if self.batch_norm else x

    def activate(self, x: Any, name: str) -> Any:
        """The configured activation ``name`` (``x`` unchanged for ``NONE``)."""
        act = self.activation_layer(name)
        return act(x) if act is not None else x

    def conv_block(self, x: Any, filters: int, kernel: int, stride: int, name: str, separable: bool = False) -> Any:
        """Conv (``{name}_conv``, separable when asked) -> BatchNorm (``{name}_bn``) -> activation, 'same' padding."""
        conv = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
        x = conv(filters, kernel, strides=stride, padding="same", use_bias=self.use_bias(), name=f"{name}_conv")(x)
        return self.activate(self.normalize(x, f"{name}_bn"), f"{name}_act")

    def block_variables(self, model: keras.Model, prefix: str, name: str) -> dict[str, keras.Variable]:
        """Checkpoint entries of a :meth:`conv_block` (conv at ``{prefix}/0``, BatchNorm at ``{prefix}/1``)."""
        out = layer_items(f"{prefix}/0", model.get_layer(f"{name}_conv"))
        if self.batch_norm:
            out.update(layer_items(f"{prefix}/1", model.get_layer(f"{name}_bn")))
        return out
