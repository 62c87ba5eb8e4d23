"""The SSD meta-architecture in Keras 3 (SSD MobileNet V2 FPN, EfficientDet), faithful to the TF2 OD API.

:class:`SSD` has the same interface as :class:`zoo.models.centernet.CenterNet`: ``keras_model``
(preprocessed images -> raw predictions), ``checkpoint_map()`` (every variable under its checkpoint
key), ``class_dependent_keys()``, and the three stages of the original:

* :meth:`SSD.preprocess` - the feature extractor's normalization, *then* the image resizer (the
  original normalizes before resizing, so the zero padding of a padded resize stays 0);
* :meth:`SSD.predict` - feature maps, the weight-shared convolutional box predictor, anchors;
* :meth:`SSD.postprocess` - box decoding (:mod:`zoo.models.box_coders`), score conversion, and
  per-class NMS with clipping to the true image (:mod:`zoo.models.nms`).

Feature extractors are looked up by the config's ``feature_extractor.type`` (see
:data:`FEATURE_EXTRACTORS`). An SSD feature extractor provides ``preprocess(images)`` (RGB 0..255,
before resizing), ``build() -> keras.Model`` (preprocessed images -> list of feature maps, finest
first, one per anchor level) and ``checkpoint_map(model)`` (keys relative to ``model/_feature_extractor/``).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ..errors import ConfigError, UnsupportedModelError
from .anchors import anchor_generator_from_config
from .box_coders import FasterRcnnBoxCoder, box_coder_from_config
from .layers import variable_attributes
from .nms import NmsConfig, batch_multiclass_nms, nms_config_from_config
from .preprocess import Resizer, resize_batch, resizer_from_config

__all__ = [
    "FEATURE_EXTRACTORS",
    "SSD",
    "BoxPredictorConfig",
    "ConvHyperparams",
    "SsdConfig",
    "build_ssd",
    "get_feature_extractor",
]

_FE_PREFIX = "model/_feature_extractor/"
_BP_PREFIX = "model/_box_predictor/"
BOX_ENCODINGS = "box_encodings"
CLASS_PREDICTIONS = "class_predictions_with_background"

# feature_extractor.type -> module under zoo.models.backbones exposing create(config, hyperparams).
FEATURE_EXTRACTORS: dict[str, str] = {
    "ssd_mobilenet_v2_fpn_keras": "ssd_mobilenet_v2_fpn",
    **{f"ssd_efficientnet-b{i}_bifpn_keras": "efficientnet_bifpn" for i in range(8)},
}


# ---------------------------------------------------------------------------------- hyperparams
@dataclasses.dataclass(frozen=True)
class ConvHyperparams:
    """What the layers read from a ``conv_hyperparams`` message: activation, BatchNorm, bias rule."""

    activation: str = "RELU"
    batch_norm: bool = False
    bn_epsilon: float = 0.001
    bn_scale: bool = False
    bn_center: bool = True
    force_use_bias: bool = False

    @classmethod
    def from_config(cls, msg: Any) -> ConvHyperparams:
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
        """Whether a conv gets a bias: forced, else as requested, else only without BatchNorm."""
        if self.force_use_bias:
            return True
        if requested is not None:
            return requested
        return not self.batch_norm

    def batch_norm_layer(self, name: str) -> keras.layers.BatchNormalization:
        """A BatchNormalization with the configured epsilon (inference uses the moving statistics)."""
        return keras.layers.BatchNormalization(
            epsilon=self.bn_epsilon, scale=self.bn_scale, center=self.bn_center, name=name
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


def get_feature_extractor(config: Any, hyperparams: ConvHyperparams) -> Any:
    """The SSD feature extractor for a ``feature_extractor`` message."""
    kind = str(config.get("type", ""))
    module = FEATURE_EXTRACTORS.get(kind)
    if module is None:
        raise UnsupportedModelError(
            f"SSD feature extractor {kind!r} has no Keras implementation (implemented: "
            f"{', '.join(sorted(FEATURE_EXTRACTORS))}); load the model with backend='saved_model' to run "
            "the archive's exported SavedModel instead"
        )
    factory: Callable[..., Any] = importlib.import_module(f"{__package__}.backbones.{module}").create
    return factory(config, hyperparams)


# ---------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class BoxPredictorConfig:
    """``weight_shared_convolutional_box_predictor`` fields."""

    depth: int = 0
    num_layers_before_predictor: int = 0
    kernel_size: int = 3
    class_prediction_bias_init: float = 0.0
    use_dropout: bool = False
    share_prediction_tower: bool = False
    use_depthwise: bool = False
    score_converter: str = "IDENTITY"
    hyperparams: ConvHyperparams = ConvHyperparams()


@dataclasses.dataclass(frozen=True)
class SsdConfig:
    """What the meta-architecture reads from ``model.ssd`` besides the feature extractor."""

    num_classes: int
    add_background_class: bool = True
    explicit_background_class: bool = False
    box_predictor: BoxPredictorConfig = BoxPredictorConfig()
    score_converter: str = "IDENTITY"
    logit_scale: float = 1.0
    nms: NmsConfig = dataclasses.field(default_factory=NmsConfig)

    @property
    def num_class_slots(self) -> int:
        return self.num_classes + 1 if self.add_background_class else self.num_classes


def _box_predictor_config(msg: Any) -> BoxPredictorConfig:
    kind, bp = msg.oneof()
    if kind != "weight_shared_convolutional_box_predictor":
        raise UnsupportedModelError(
            f"SSD box predictor {kind!r} has no Keras implementation (weight_shared_convolutional_box_predictor has)"
        )
    return BoxPredictorConfig(
        depth=int(bp.get("depth", 0)),
        num_layers_before_predictor=int(bp.get("num_layers_before_predictor", 0)),
        kernel_size=int(bp.get("kernel_size", 3)),
        class_prediction_bias_init=float(bp.get("class_prediction_bias_init", 0.0)),
        use_dropout=bool(bp.get("use_dropout", False)),
        share_prediction_tower=bool(bp.get("share_prediction_tower", False)),
        use_depthwise=bool(bp.get("use_depthwise", False)),
        score_converter=str(bp.get("score_converter", "IDENTITY")).upper(),
        hyperparams=ConvHyperparams.from_config(bp["conv_hyperparams"] if "conv_hyperparams" in bp else None),
    )


def ssd_config(msg: Any, *, num_classes: int | None = None) -> SsdConfig:
    """Read an ``ssd`` message into an :class:`SsdConfig`."""
    classes = int(num_classes if num_classes is not None else msg.get("num_classes", 0))
    if classes <= 0:
        raise ConfigError(f"ssd num_classes must be positive, got {classes}")
    if "box_predictor" not in msg:
        raise ConfigError("ssd config has no box_predictor block")
    post = msg["post_processing"] if "post_processing" in msg else None
    nms = (
        nms_config_from_config(post["batch_non_max_suppression"])
        if post is not None and "batch_non_max_suppression" in post
        else NmsConfig()
    )
    score_converter = str(post.get("score_converter", "IDENTITY")).upper() if post is not None else "IDENTITY"
    if score_converter not in ("IDENTITY", "SIGMOID", "SOFTMAX"):
        raise ConfigError(f"post_processing.score_converter {score_converter} is not supported")
    logit_scale = float(np.float32(post.get("logit_scale", 1.0))) if post is not None else 1.0
    if logit_scale == 0:
        raise ConfigError("post_processing.logit_scale must be non-zero")
    return SsdConfig(
        num_classes=classes,
        add_background_class=bool(msg.get("add_background_class", True)),
        explicit_background_class=bool(msg.get("explicit_background_class", False)),
        box_predictor=_box_predictor_config(msg["box_predictor"]),
        score_converter=score_converter,
        logit_scale=logit_scale,
        nms=nms,
    )


# ---------------------------------------------------------------------------------- model
class SSD:
    """Feature extractor + weight-shared box predictor as one functional Keras model, with the
    original's pre/post-processing."""

    def __init__(
        self,
        config: SsdConfig,
        feature_extractor: Any,
        resizer: Resizer,
        anchor_generator: Any,
        box_coder: FasterRcnnBoxCoder,
    ) -> None:
        self.config = config
        self.feature_extractor = feature_extractor
        self.resizer = resizer
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        per_location = anchor_generator.num_anchors_per_location()
        if len(set(per_location)) != 1:
            raise ConfigError(
                f"the weight-shared box predictor needs the same number of anchors per location on every level, "
                f"got {per_location}"
            )
        self.num_anchors_per_location = per_location[0]
        self.backbone_model = feature_extractor.build()
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        features = self.backbone_model(inputs)
        if not isinstance(features, (list, tuple)):
            features = [features]
        if len(features) != len(per_location):
            raise ConfigError(
                f"feature extractor gives {len(features)} feature maps but the anchor generator has "
                f"{len(per_location)} levels"
            )
        channels = {int(f.shape[-1]) for f in features}
        if len(channels) != 1:
            raise ConfigError(f"feature maps with different channel counts {sorted(channels)} are not supported")
        self.num_levels = len(features)
        self._build_predictor_layers(channels.pop())
        boxes, classes = self._apply_predictor(features)
        outputs = {BOX_ENCODINGS: boxes, CLASS_PREDICTIONS: classes}
        for i, f in enumerate(features):
            outputs[f"feature_maps_{i}"] = f
        self.keras_model = keras.Model(inputs, outputs, name="ssd")

    # ------------------------------------------------------------------ box predictor
    def _conv(self, filters: int, use_bias: bool, name: str, bias_init: float | None = None) -> keras.layers.Layer:
        bp = self.config.box_predictor
        kwargs: dict[str, Any] = {"padding": "same", "use_bias": use_bias, "name": name}
        if bias_init is not None:
            kwargs["bias_initializer"] = keras.initializers.Constant(bias_init)
        if bp.use_depthwise:
            return keras.layers.SeparableConv2D(filters, bp.kernel_size, **kwargs)
        return keras.layers.Conv2D(filters, bp.kernel_size, **kwargs)

    def _build_predictor_layers(self, channels: int) -> None:
        bp = self.config.box_predictor
        hp = bp.hyperparams
        depth = bp.depth or channels
        towers = ["PredictionTower"] if bp.share_prediction_tower else ["BoxPredictionTower", "ClassPredictionTower"]
        self.tower_convs = {
            scope: [self._conv(depth, hp.use_bias(False if hp.batch_norm else True), f"{scope}_conv{i}")
                    for i in range(bp.num_layers_before_predictor)]
            for scope in towers
        }
        heads = [BOX_ENCODINGS] + ([] if bp.share_prediction_tower else [CLASS_PREDICTIONS])
        self.tower_bns = {
            head: [
                [hp.batch_norm_layer(f"{head}_bn{i}_level{level}") for i in range(bp.num_layers_before_predictor)]
                if hp.batch_norm
                else []
                for level in range(self.num_levels)
            ]
            for head in heads
        }
        a = self.num_anchors_per_location
        self.box_head = self._conv(a * FasterRcnnBoxCoder.code_size, True, "BoxPredictor")
        self.class_head = self._conv(
            a * self.config.num_class_slots, True, "ClassPredictor", bias_init=bp.class_prediction_bias_init
        )

    def _tower(self, x: Any, scope: str, head: str, level: int) -> Any:
        hp = self.config.box_predictor.hyperparams
        for i, conv in enumerate(self.tower_convs[scope]):
            x = conv(x)
            if hp.batch_norm:
                x = self.tower_bns[head][level][i](x)
            act = hp.activation_layer(f"{head}_act{i}_level{level}")
            x = act(x) if act is not None else x
        return x

    def _apply_predictor(self, features: list[Any]) -> tuple[Any, Any]:
        bp = self.config.box_predictor
        box_scope = "PredictionTower" if bp.share_prediction_tower else "BoxPredictionTower"
        boxes, classes = [], []
        for level, feature in enumerate(features):
            box_feature = self._tower(feature, box_scope, BOX_ENCODINGS, level)
            encoded = self.box_head(box_feature)
            boxes.append(keras.layers.Reshape((-1, FasterRcnnBoxCoder.code_size), name=f"box_flat_{level}")(encoded))
            if bp.share_prediction_tower:
                class_feature = box_feature
            else:
                class_feature = self._tower(feature, "ClassPredictionTower", CLASS_PREDICTIONS, level)
            logits = self.class_head(class_feature)
            if bp.score_converter == "SIGMOID":
                logits = keras.layers.Activation("sigmoid", name=f"class_sigmoid_{level}")(logits)
            classes.append(keras.layers.Reshape((-1, self.config.num_class_slots), name=f"class_flat_{level}")(logits))
        box_out = keras.layers.Concatenate(axis=1, name=BOX_ENCODINGS)(boxes) if len(boxes) > 1 else boxes[0]
        cls_out = keras.layers.Concatenate(axis=1, name=CLASS_PREDICTIONS)(classes) if len(classes) > 1 else classes[0]
        return box_out, cls_out

    # ------------------------------------------------------------------ checkpoint
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def checkpoint_map(self) -> dict[str, keras.Variable]:
        """Full checkpoint key (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variable, for every variable."""
        out = {_FE_PREFIX + k: v for k, v in self.feature_extractor.checkpoint_map(self.backbone_model).items()}
        for scope, convs in self.tower_convs.items():
            for i, conv in enumerate(convs):
                for attr, var in variable_attributes(conv):
                    out[f"{_BP_PREFIX}_head_scope_conv_layers/{scope}/{i}/{attr}"] = var
        for head, levels in self.tower_bns.items():
            for level, bns in enumerate(levels):
                for i, bn in enumerate(bns):
                    for attr, var in variable_attributes(bn):
                        out[f"{_BP_PREFIX}_base_tower_layers_for_heads/{head}/{level}/{3 * i + 1}/{attr}"] = var
        for attr, var in variable_attributes(self.box_head):
            out[f"{_BP_PREFIX}_box_prediction_head/_box_encoder_layers/0/{attr}"] = var
        out.update(self._class_head_items())
        return out

    def _class_head_items(self) -> list[tuple[str, keras.Variable]]:
        index = 1 if self.config.box_predictor.use_dropout else 0
        prefix = f"{_BP_PREFIX}_prediction_heads/{CLASS_PREDICTIONS}/_class_predictor_layers/{index}"
        return [(f"{prefix}/{attr}", var) for attr, var in variable_attributes(self.class_head)]

    def class_dependent_keys(self) -> list[str]:
        """Checkpoint keys whose shape depends on the number of classes (the class predictor)."""
        return [key for key, var in self._class_head_items() if not key.endswith("depthwise_kernel")]

    # ------------------------------------------------------------------ the three stages
    def preprocess(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``[B,H,W,3]`` images (any real dtype, RGB 0..255) -> (network input, true shapes [B,3])."""
        normalized = self.feature_extractor.preprocess(tf.cast(images, tf.float32))
        return resize_batch(self.resizer, normalized)

    def anchors(self, preprocessed_shape: Any, feature_shapes: list[Any]) -> tf.Tensor:
        """Anchors ``[N, 4]`` (normalized) for an input of ``preprocessed_shape`` and its feature maps."""
        return self.anchor_generator.generate(feature_shapes, preprocessed_shape[1], preprocessed_shape[2])

    def predict(self, preprocessed: tf.Tensor, training: bool = False) -> dict[str, Any]:
        """Raw predictions as the original's ``predict``: box encodings, class logits, anchors, feature maps."""
        preprocessed = tf.convert_to_tensor(preprocessed, tf.float32)
        min_dim = int(getattr(self.feature_extractor, "min_image_dim", 0))
        shape = _static_or_dynamic(preprocessed)
        if min_dim and isinstance(shape[1], int) and isinstance(shape[2], int) and min(shape[1:3]) < min_dim:
            raise ConfigError(f"image size {shape[1]}x{shape[2]} is below this feature extractor's minimum {min_dim}")
        flat = self.keras_model(preprocessed, training=training)
        feature_maps = [flat[f"feature_maps_{i}"] for i in range(self.num_levels)]
        anchors = self.anchors(shape, [tuple(_static_or_dynamic(f)[1:3]) for f in feature_maps])
        return {
            "preprocessed_inputs": preprocessed,
            "feature_maps": feature_maps,
            "anchors": anchors,
            "final_anchors": tf.tile(anchors[tf.newaxis], [tf.shape(preprocessed)[0], 1, 1]),
            BOX_ENCODINGS: flat[BOX_ENCODINGS],
            CLASS_PREDICTIONS: flat[CLASS_PREDICTIONS],
        }

    def convert_scores(self, logits: tf.Tensor) -> tf.Tensor:
        """The post-processing score converter (with ``logit_scale``)."""
        scaled = tf.multiply(logits, 1.0 / self.config.logit_scale)
        if self.config.score_converter == "SIGMOID":
            return tf.sigmoid(scaled)
        if self.config.score_converter == "SOFTMAX":
            return tf.nn.softmax(scaled)
        return scaled

    def postprocess(self, predictions: dict[str, Any], true_shapes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Detections as the original's ``postprocess``: normalized boxes, 0-based classes, raw outputs."""
        preprocessed = predictions["preprocessed_inputs"]
        anchors = predictions["anchors"]
        boxes = self.box_coder.decode(predictions[BOX_ENCODINGS], anchors[tf.newaxis])
        scores_with_background = self.convert_scores(predictions[CLASS_PREDICTIONS])
        scores = scores_with_background
        if self.config.add_background_class or self.config.explicit_background_class:
            scores = scores[:, :, 1:]
        batch = tf.shape(preprocessed)[0]
        anchor_indices = tf.tile(tf.range(tf.shape(anchors)[0])[tf.newaxis], [batch, 1])
        extra = {"multiclass_scores": scores_with_background, "anchor_indices": tf.cast(anchor_indices, tf.float32)}
        nms_boxes, nms_scores, nms_classes, nms_extra, num = batch_multiclass_nms(
            boxes, scores, self.config.nms, clip_window=clip_window(preprocessed, true_shapes), additional_fields=extra
        )
        return {
            "detection_boxes": nms_boxes,
            "detection_scores": nms_scores,
            "detection_classes": nms_classes,
            "num_detections": tf.cast(num, tf.float32),
            "raw_detection_boxes": boxes,
            "raw_detection_scores": scores_with_background,
            "detection_multiclass_scores": nms_extra["multiclass_scores"],
            "detection_anchor_indices": tf.cast(nms_extra["anchor_indices"], tf.int32),
        }

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """preprocess -> predict -> postprocess on a ``[B,H,W,3]`` batch."""
        preprocessed, true_shapes = self.preprocess(images)
        return self.postprocess(self.predict(preprocessed), true_shapes)


def _static_or_dynamic(x: tf.Tensor) -> list[Any]:
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape)]


def clip_window(preprocessed: tf.Tensor, true_shapes: tf.Tensor | None) -> tf.Tensor:
    """``[B, 4]`` windows ``[0, 0, true_h / padded_h, true_w / padded_w]`` (``[0, 0, 1, 1]`` without shapes)."""
    if true_shapes is None:
        return tf.constant([0.0, 0.0, 1.0, 1.0])
    shape = tf.shape(preprocessed)
    true = tf.cast(true_shapes, tf.float32)
    heights, widths = true[:, 0], true[:, 1]
    return tf.stack(
        [
            tf.zeros_like(heights),
            tf.zeros_like(widths),
            heights / tf.cast(shape[1], tf.float32),
            widths / tf.cast(shape[2], tf.float32),
        ],
        axis=1,
    )


def build_ssd(msg: Any, *, num_classes: int | None = None, **_: Any) -> SSD:
    """An :class:`SSD` (weights freshly initialised) from the ``model.ssd`` message of a pipeline.config."""
    for field in ("feature_extractor", "image_resizer", "anchor_generator", "box_coder"):
        if field not in msg:
            raise ConfigError(f"ssd config has no {field} block")
    fe_msg = msg["feature_extractor"]
    hyperparams = ConvHyperparams.from_config(fe_msg["conv_hyperparams"] if "conv_hyperparams" in fe_msg else None)
    extractor = get_feature_extractor(fe_msg, hyperparams)
    return SSD(
        ssd_config(msg, num_classes=num_classes),
        extractor,
        resizer_from_config(msg["image_resizer"]),
        anchor_generator_from_config(msg["anchor_generator"]),
        box_coder_from_config(msg["box_coder"]),
    )
