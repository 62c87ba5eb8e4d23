"""The SSD meta-architecture in Keras 3 (SSD MobileNet / ResNet FPN, SSD MobileNet V2, EfficientDet), faithful
to the TF2 OD API.

:class:`SSD` satisfies :class:`zoo.models.protocols.MetaArchitecture` and runs the three stages of the
original:

* :meth:`SSD.preprocess` - the feature extractor's normalization, *then* the image resizer (the
  original normalizes before resizing, so the zero padding of a padded resize stays 0);
* :meth:`SSD.predict` - feature maps, the box predictor (:class:`WeightSharedBoxPredictor` or the
  per-level :class:`ConvolutionalBoxPredictor`), anchors;
* :meth:`SSD.postprocess` - box decoding (:mod:`zoo.models.box_coders`), score conversion, and
  per-class NMS with clipping to the true image (:mod:`zoo.models.nms`).

Feature extractors (:mod:`zoo.models.backbones.ssd`) satisfy :class:`SsdFeatureExtractor`; the FPN
ones share :class:`zoo.models.fpn.FpnFeatureExtractor`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import keras
import tensorflow as tf

from ..errors import ConfigError, UnsupportedModelError
from . import fields, registry
from .anchors import AnchorGenerator, anchor_generator_from_config
from .box_coders import FasterRcnnBoxCoder, box_coder_from_config
from .checkpoint_layout import layer_items
from .layers import ConvHyperparams
from .nms import NmsConfig, batch_multiclass_nms
from .post_processing import post_processing_from_config
from .preprocess import Resizer, resize_batch, resizer_from_config
from .score_converters import convert_scores

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping

    from ..pipeline_config import Message

__all__ = [
    "SSD",
    "BoxPredictorConfig",
    "ConvolutionalBoxPredictor",
    "SsdConfig",
    "SsdFeatureExtractor",
    "WeightSharedBoxPredictor",
    "build_ssd",
    "get_feature_extractor",
    "ssd_config",
]

_FE_PREFIX = "model/_feature_extractor/"
_BP_PREFIX = "model/_box_predictor/"
BOX_ENCODINGS = "box_encodings"
CLASS_PREDICTIONS = "class_predictions_with_background"
WEIGHT_SHARED = "weight_shared_convolutional_box_predictor"
CONVOLUTIONAL = "convolutional_box_predictor"

class SsdFeatureExtractor(Protocol):
    """What an SSD feature extractor provides (registered with
    ``@register_feature_extractor(type, meta="ssd")``; its factory takes the ``feature_extractor``
    message and the :class:`~zoo.models.layers.ConvHyperparams` of its ``conv_hyperparams``)."""

    name: str
    min_image_dim: int

    def preprocess(self, images: tf.Tensor) -> tf.Tensor:
        """RGB 0..255 ``[B,H,W,3]`` (before resizing) -> the network's input scale."""
        ...

    def build(self) -> keras.Model:
        """Preprocessed images -> list of feature maps, finest first, one per anchor level."""
        ...

    def checkpoint_map(self, model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/_feature_extractor/`` -> variables of ``model``."""
        ...


def get_feature_extractor(config: Message, hyperparams: ConvHyperparams) -> SsdFeatureExtractor:
    """The SSD feature extractor for a ``feature_extractor`` message."""
    factory = registry.feature_extractor("ssd", str(config.get("type", "")))
    return factory(config, hyperparams)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class BoxPredictorConfig:
    """``weight_shared_convolutional_box_predictor`` / ``convolutional_box_predictor`` fields (``kind``
    says which; defaults are the weight-shared message's, :func:`_box_predictor_config` applies the
    other message's own)."""

    kind: str = WEIGHT_SHARED
    depth: int = 0
    num_layers_before_predictor: int = 0
    kernel_size: int = 3
    class_prediction_bias_init: float = 0.0
    use_dropout: bool = False
    share_prediction_tower: bool = False
    use_depthwise: bool = False
    score_converter: str = "IDENTITY"
    hyperparams: ConvHyperparams = ConvHyperparams()
    min_depth: int = 0
    max_depth: int = 0
    box_code_size: int = 4
    apply_sigmoid_to_scores: bool = False


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


def _box_predictor_config(msg: Message) -> BoxPredictorConfig:
    kind, bp = msg.oneof()
    hyperparams = ConvHyperparams.from_config(bp["conv_hyperparams"] if "conv_hyperparams" in bp else None)
    if kind == CONVOLUTIONAL:
        return BoxPredictorConfig(
            kind=kind,
            min_depth=int(bp.get("min_depth", 0)),
            max_depth=int(bp.get("max_depth", 0)),
            num_layers_before_predictor=int(bp.get("num_layers_before_predictor", 0)),
            use_dropout=bool(bp.get("use_dropout", True)),
            kernel_size=int(bp.get("kernel_size", 1)),
            box_code_size=int(bp.get("box_code_size", 4)),
            apply_sigmoid_to_scores=bool(bp.get("apply_sigmoid_to_scores", False)),
            class_prediction_bias_init=float(bp.get("class_prediction_bias_init", 0.0)),
            use_depthwise=bool(bp.get("use_depthwise", False)),
            hyperparams=hyperparams,
        )
    if kind != WEIGHT_SHARED:
        raise UnsupportedModelError(
            f"SSD box predictor {kind!r} has no Keras implementation ({WEIGHT_SHARED} and {CONVOLUTIONAL} have)"
        )
    return BoxPredictorConfig(
        kind=kind,
        depth=int(bp.get("depth", 0)),
        num_layers_before_predictor=int(bp.get("num_layers_before_predictor", 0)),
        kernel_size=int(bp.get("kernel_size", 3)),
        class_prediction_bias_init=float(bp.get("class_prediction_bias_init", 0.0)),
        use_dropout=bool(bp.get("use_dropout", False)),
        share_prediction_tower=bool(bp.get("share_prediction_tower", False)),
        use_depthwise=bool(bp.get("use_depthwise", False)),
        score_converter=str(bp.get("score_converter", "IDENTITY")).upper(),
        hyperparams=hyperparams,
    )


def ssd_config(msg: Message, *, num_classes: int | None = None) -> SsdConfig:
    """Read an ``ssd`` message into an :class:`SsdConfig`."""
    classes = fields.num_classes(msg, "ssd", num_classes)
    fields.require_blocks(msg, "ssd", "box_predictor")
    post = post_processing_from_config(msg["post_processing"] if "post_processing" in msg else None,
                                       "post_processing")
    return SsdConfig(
        num_classes=classes,
        add_background_class=bool(msg.get("add_background_class", True)),
        explicit_background_class=bool(msg.get("explicit_background_class", False)),
        box_predictor=_box_predictor_config(msg["box_predictor"]),
        score_converter=post.score_converter,
        logit_scale=post.logit_scale,
        nms=post.nms,
    )


# ---------------------------------------------------------------------------------- box predictors
def _flatten(x: Any, width: int, name: str) -> Any:
    return keras.layers.Reshape((-1, width), name=name)(x)


def _concat(parts: list[Any], name: str) -> Any:
    return keras.layers.Concatenate(axis=1, name=name)(parts) if len(parts) > 1 else parts[0]


class WeightSharedBoxPredictor:
    """``weight_shared_convolutional_box_predictor``: box and class towers and heads whose convolutions
    are shared by every level (BatchNorms are per level), as in RetinaNet."""

    def __init__(self, config: SsdConfig, anchors_per_location: list[int], channels: list[int]) -> None:
        if len(set(anchors_per_location)) != 1:
            raise ConfigError(
                f"the weight-shared box predictor needs the same number of anchors per location on every level, "
                f"got {anchors_per_location}"
            )
        if len(set(channels)) != 1:
            raise ConfigError(f"feature maps with different channel counts {sorted(set(channels))} are not supported")
        self.config = config
        self.num_levels = len(channels)
        bp = config.box_predictor
        hp = bp.hyperparams
        depth = bp.depth or channels[0]
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
        a = anchors_per_location[0]
        self.box_head = self._conv(a * FasterRcnnBoxCoder.code_size, True, "BoxPredictor")
        self.class_head = self._conv(
            a * config.num_class_slots, True, "ClassPredictor", bias_init=bp.class_prediction_bias_init
        )
        self.class_heads = [self.class_head]

    def _conv(self, filters: int, use_bias: bool, name: str, bias_init: float | None = None) -> keras.layers.Layer:
        bp = self.config.box_predictor
        kwargs: dict[str, Any] = {"padding": "same", "use_bias": use_bias, "name": name}
        if bias_init is not None:
            kwargs["bias_initializer"] = keras.initializers.Constant(bias_init)
        if bp.use_depthwise:
            return keras.layers.SeparableConv2D(filters, bp.kernel_size, **kwargs)
        return keras.layers.Conv2D(filters, bp.kernel_size, **kwargs)

    def _tower(self, x: Any, scope: str, head: str, level: int) -> Any:
        hp = self.config.box_predictor.hyperparams
        for i, conv in enumerate(self.tower_convs[scope]):
            x = conv(x)
            if hp.batch_norm:
                x = self.tower_bns[head][level][i](x)
            act = hp.activation_layer(f"{head}_act{i}_level{level}")
            x = act(x) if act is not None else x
        return x

    def __call__(self, features: list[Any]) -> tuple[Any, Any]:
        """Feature maps -> (box encodings ``[B, N, 4]``, class logits ``[B, N, classes + 1]``)."""
        bp = self.config.box_predictor
        box_scope = "PredictionTower" if bp.share_prediction_tower else "BoxPredictionTower"
        boxes, classes = [], []
        for level, feature in enumerate(features):
            box_feature = self._tower(feature, box_scope, BOX_ENCODINGS, level)
            boxes.append(_flatten(self.box_head(box_feature), FasterRcnnBoxCoder.code_size, f"box_flat_{level}"))
            if bp.share_prediction_tower:
                class_feature = box_feature
            else:
                class_feature = self._tower(feature, "ClassPredictionTower", CLASS_PREDICTIONS, level)
            logits = self.class_head(class_feature)
            if bp.score_converter == "SIGMOID":
                logits = keras.layers.Activation("sigmoid", name=f"class_sigmoid_{level}")(logits)
            classes.append(_flatten(logits, self.config.num_class_slots, f"class_flat_{level}"))
        return _concat(boxes, BOX_ENCODINGS), _concat(classes, CLASS_PREDICTIONS)

    def checkpoint_map(self) -> dict[str, keras.Variable]:
        """Checkpoint keys (full, under ``model/_box_predictor/``) -> variables."""
        out: dict[str, keras.Variable] = {}
        for scope, convs in self.tower_convs.items():
            for i, conv in enumerate(convs):
                out.update(layer_items(f"{_BP_PREFIX}_head_scope_conv_layers/{scope}/{i}", conv))
        for head, levels in self.tower_bns.items():
            for level, bns in enumerate(levels):
                for i, bn in enumerate(bns):
                    out.update(layer_items(f"{_BP_PREFIX}_base_tower_layers_for_heads/{head}/{level}/{3 * i + 1}", bn))
        out.update(layer_items(f"{_BP_PREFIX}_box_prediction_head/_box_encoder_layers/0", self.box_head))
        out.update(self.class_head_items())
        return out

    def class_head_items(self) -> dict[str, keras.Variable]:
        """The class predictor's checkpoint entries."""
        index = 1 if self.config.box_predictor.use_dropout else 0
        return layer_items(f"{_BP_PREFIX}_prediction_heads/{CLASS_PREDICTIONS}/_class_predictor_layers/{index}",
                            self.class_head)


class ConvolutionalBoxPredictor:
    """``convolutional_box_predictor`` (the original SSD's): every level has its own box and class
    convolutions (``kernel_size``, 'same' padding, with bias); dropout before the class conv is the
    identity at inference but shifts its checkpoint index."""

    def __init__(self, config: SsdConfig, anchors_per_location: list[int], channels: list[int]) -> None:
        bp = config.box_predictor
        if len(anchors_per_location) != len(channels):
            raise ConfigError(f"{len(channels)} feature maps but anchors for {len(anchors_per_location)} levels")
        if bp.use_depthwise:
            raise UnsupportedModelError(f"{CONVOLUTIONAL} with use_depthwise has no Keras implementation")
        tower_depths = [max(min(c, bp.max_depth), bp.min_depth) for c in channels]
        if bp.num_layers_before_predictor > 0 and any(d > 0 for d in tower_depths):
            raise UnsupportedModelError(
                f"{CONVOLUTIONAL} with layers before the predictor (num_layers_before_predictor "
                f"{bp.num_layers_before_predictor}, depths {tower_depths}) has no Keras implementation"
            )
        if bp.box_code_size != FasterRcnnBoxCoder.code_size:
            raise ConfigError(
                f"{CONVOLUTIONAL}.box_code_size is {bp.box_code_size} but the box coder's code size is "
                f"{FasterRcnnBoxCoder.code_size}"
            )
        self.config = config
        self.box_heads = [
            keras.layers.Conv2D(a * bp.box_code_size, bp.kernel_size, padding="same", name=f"BoxEncodingPredictor_{i}")
            for i, a in enumerate(anchors_per_location)
        ]
        self.class_heads = [
            keras.layers.Conv2D(
                a * config.num_class_slots, bp.kernel_size, padding="same", name=f"ClassPredictor_{i}",
                bias_initializer=keras.initializers.Constant(bp.class_prediction_bias_init),
            )
            for i, a in enumerate(anchors_per_location)
        ]
        self.class_head = self.class_heads[0]

    def __call__(self, features: list[Any]) -> tuple[Any, Any]:
        """Feature maps -> (box encodings ``[B, N, 4]``, class logits ``[B, N, classes + 1]``)."""
        boxes, classes = [], []
        for level, feature in enumerate(features):
            boxes.append(_flatten(self.box_heads[level](feature), self.config.box_predictor.box_code_size,
                                  f"box_flat_{level}"))
            logits = self.class_heads[level](feature)
            if self.config.box_predictor.apply_sigmoid_to_scores:
                logits = keras.layers.Activation("sigmoid", name=f"class_sigmoid_{level}")(logits)
            classes.append(_flatten(logits, self.config.num_class_slots, f"class_flat_{level}"))
        return _concat(boxes, BOX_ENCODINGS), _concat(classes, CLASS_PREDICTIONS)

    def checkpoint_map(self) -> dict[str, keras.Variable]:
        """Checkpoint keys (full, under ``model/_box_predictor/``) -> variables."""
        out: dict[str, keras.Variable] = {}
        for level, head in enumerate(self.box_heads):
            out.update(layer_items(f"{_BP_PREFIX}_prediction_heads/{BOX_ENCODINGS}/{level}/_box_encoder_layers/0", head))
        out.update(self.class_head_items())
        return out

    def class_head_items(self) -> dict[str, keras.Variable]:
        """The class predictors' checkpoint entries."""
        index = 1 if self.config.box_predictor.use_dropout else 0
        out: dict[str, keras.Variable] = {}
        for level, head in enumerate(self.class_heads):
            prefix = f"{_BP_PREFIX}_prediction_heads/{CLASS_PREDICTIONS}/{level}/_class_predictor_layers/{index}"
            out.update(layer_items(prefix, head))
        return out


BOX_PREDICTORS: dict[str, Callable[..., Any]] = {
    WEIGHT_SHARED: WeightSharedBoxPredictor,
    CONVOLUTIONAL: ConvolutionalBoxPredictor,
}


# ---------------------------------------------------------------------------------- model
class SSD:
    """Feature extractor + box predictor as one functional Keras model, with the original's
    pre/post-processing."""

    def __init__(
        self,
        config: SsdConfig,
        feature_extractor: SsdFeatureExtractor,
        resizer: Resizer,
        anchor_generator: AnchorGenerator,
        box_coder: FasterRcnnBoxCoder,
    ) -> None:
        self.config = config
        self.feature_extractor = feature_extractor
        self.resizer = resizer
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder
        self.num_anchors_per_location = anchor_generator.num_anchors_per_location()
        self.backbone_model = feature_extractor.build()
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        features = self.backbone_model(inputs)
        if not isinstance(features, (list, tuple)):
            features = [features]
        if len(features) != len(self.num_anchors_per_location):
            raise ConfigError(
                f"feature extractor gives {len(features)} feature maps but the anchor generator has "
                f"{len(self.num_anchors_per_location)} levels"
            )
        self.num_levels = len(features)
        self.box_predictor = BOX_PREDICTORS[config.box_predictor.kind](
            config, self.num_anchors_per_location, [int(f.shape[-1]) for f in features]
        )
        boxes, classes = self.box_predictor(features)
        outputs = {BOX_ENCODINGS: boxes, CLASS_PREDICTIONS: classes}
        for i, f in enumerate(features):
            outputs[f"feature_maps_{i}"] = f
        self.keras_model = keras.Model(inputs, outputs, name="ssd")

    @property
    def class_head(self) -> keras.layers.Layer:
        """The (first level's) class predictor convolution."""
        return self.box_predictor.class_head

    # ------------------------------------------------------------------ checkpoint
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def checkpoint_map(self) -> dict[str, keras.Variable]:
        """Full checkpoint key (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variable, for every variable."""
        out = {_FE_PREFIX + k: v for k, v in self.feature_extractor.checkpoint_map(self.backbone_model).items()}
        out.update(self.box_predictor.checkpoint_map())
        return out

    def class_dependent_keys(self) -> list[str]:
        """Checkpoint keys whose shape depends on the number of classes (the class predictor)."""
        return [key for key in self.box_predictor.class_head_items() if not key.endswith("depthwise_kernel")]

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
        return convert_scores(logits, self.config.score_converter, self.config.logit_scale)

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


@registry.register_meta_architecture("ssd")
def build_ssd(
    msg: Message, *, num_classes: int | None = None, label_map: Mapping[int, str] | None = None
) -> SSD:
    """An :class:`SSD` (weights freshly initialised) from the ``model.ssd`` message of a pipeline.config
    (``label_map`` is not used: SSD has no class-specific settings)."""
    fields.require_blocks(msg, "ssd", "feature_extractor", "image_resizer", "anchor_generator", "box_coder")
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
