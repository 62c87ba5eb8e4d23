"""The Faster R-CNN / Mask R-CNN meta-architecture in Keras 3, faithful to the TF2 OD API.

Feature extractors: ResNet V1 50/101/152 and Inception-ResNet-V2.

:class:`FasterRCNN` satisfies :class:`zoo.models.protocols.MetaArchitecture`; its three stages:

* :meth:`FasterRCNN.preprocess` - the image resizer, *then* the extractor's normalization (ResNet:
  channel-mean subtraction, so the zero padding of a padded resize becomes ``-mean``; Inception-ResNet:
  pixels to [-1, 1]);
* :meth:`FasterRCNN.predict` - first stage: stride-16 features, a 3x3 RPN convolution (ReLU6) and
  1x1 box / objectness heads over a grid of anchors; proposals: box decoding, softmax objectness,
  NMS clipped to the true image (``first_stage_max_proposals``), normalized by the padded image;
  second stage: bilinear crop-and-resize of every proposal to ``initial_crop_size``, max-pool, the
  extractor's second half, average pool, and fully connected box / class heads;
* third stage (Mask R-CNN, ``number_of_stages: 3``), inside ``predict`` as in the original: the
  box detections crop the features again, run the extractor's second half and a convolutional
  mask head (bilinear upsampling to the mask size, 3x3 convolutions); ``detection_masks`` are the
  sigmoid of each detection's own class mask, relative to its box;
* :meth:`FasterRCNN.postprocess` - refined boxes decoded against the proposals, score conversion
  (``SOFTMAX``), per-class NMS over the valid proposals, clipped to and expressed in the true image.

Quirks of the original kept here: anchors are clipped to the (padded) network input; the proposal
NMS clips to the true image while proposals are normalized by the padded input size; the RPN
activation is ReLU6 whatever the hyperparameters say; the original's static-shape (TPU) settings
only apply to training, so inference uses the dynamic NMS. ``use_matmul_crop_and_resize`` (the TPU
configs) samples the points ``tf.image.crop_and_resize`` samples but interpolates each of the four
neighbours that lies on the feature map, where the native op returns 0 for any point past the last
row or column (a box edge at 1.0 can land a rounding error beyond it); it is computed here as the
native op on the feature map padded by one zero row/column on every side.

Feature extractors (:mod:`zoo.models.backbones.faster_rcnn`) satisfy :class:`FasterRcnnFeatureExtractor`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Protocol

import keras
import tensorflow as tf

from ..errors import ConfigError, UnsupportedModelError
from . import fields, registry
from .anchors import GridAnchors, grid_anchor_generator_from_config
from .box_coders import FasterRcnnBoxCoder
from .checkpoint_layout import variable_attributes
from .fields import f32
from .layers import ConvHyperparams
from .nms import NmsConfig, batch_class_specific_nms, batch_multiclass_nms
from .post_processing import post_processing_from_config
from .preprocess import Resizer, resize_batch, resizer_from_config
from .score_converters import convert_scores

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Mapping

    from ..pipeline_config import Message

__all__ = [
    "FasterRCNN",
    "FasterRcnnConfig",
    "FasterRcnnFeatureExtractor",
    "build_faster_rcnn",
    "default_mask_conv_depth",
    "faster_rcnn_config",
    "get_feature_extractor",
]

_PREFIX = "model/"
_RPN_BOX = "_first_stage_box_predictor/_prediction_heads/box_encodings/0/_box_encoder_layers/0"
_RPN_CLASS = "_first_stage_box_predictor/_prediction_heads/class_predictions_with_background/0/_class_predictor_layers/0"
_RPN_CONV = "_first_stage_box_predictor_first_conv/layer_with_weights-0"
_BOX_HEAD = "_mask_rcnn_box_predictor/_box_prediction_head/_box_encoder_layers"
_CLASS_HEAD = "_mask_rcnn_box_predictor/_class_prediction_head/_class_predictor_layers"
_MASK_HEAD = "_mask_rcnn_box_predictor/_third_stage_heads/mask_predictions/_mask_predictor_layers"
# The first stage's box coder (and the second stage's, which reuses it).
_BOX_CODER_SCALES = (10.0, 10.0, 5.0, 5.0)


# ---------------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class FasterRcnnConfig:
    """What the meta-architecture reads from ``model.faster_rcnn`` besides extractor, resizer, anchors."""

    num_classes: int
    rpn_depth: int = 512
    rpn_kernel_size: int = 3
    rpn_atrous_rate: int = 1
    first_stage_nms: NmsConfig = dataclasses.field(
        default_factory=lambda: NmsConfig(0.0, 0.7, 300, 300, change_coordinate_frame=False)
    )
    initial_crop_size: int = 14
    maxpool_kernel_size: int = 0
    maxpool_stride: int = 1
    use_matmul_crop_and_resize: bool = False
    share_box_across_classes: bool = False
    use_dropout: bool = False
    second_stage_nms: NmsConfig = dataclasses.field(default_factory=NmsConfig)
    score_converter: str = "IDENTITY"
    logit_scale: float = 1.0
    predict_masks: bool = False
    mask_height: int = 15
    mask_width: int = 15
    mask_num_conv_layers: int = 2
    mask_conv_depth: int = 256
    masks_class_agnostic: bool = False
    mask_hyperparams: ConvHyperparams = dataclasses.field(default_factory=ConvHyperparams)

    @property
    def num_masks(self) -> int:
        """Masks predicted per detection: 1 when class agnostic, else one per class."""
        return 1 if self.masks_class_agnostic else self.num_classes

    @property
    def max_proposals(self) -> int:
        return self.first_stage_nms.max_total_size

    @property
    def num_box_outputs(self) -> int:
        """Boxes refined per proposal: 1 when shared across classes, else one per class."""
        return 1 if self.share_box_across_classes else self.num_classes


def _no_batch_norm(hp: ConvHyperparams, field: str) -> None:
    if hp.batch_norm:
        raise UnsupportedModelError(f"faster_rcnn.{field} with batch_norm has no Keras implementation in odzoo")


def faster_rcnn_config(msg: Message, *, num_classes: int | None = None) -> FasterRcnnConfig:
    """Read a ``faster_rcnn`` message into a :class:`FasterRcnnConfig` (protobuf defaults for absent fields)."""
    classes = fields.num_classes(msg, "faster_rcnn", num_classes)
    fields.require_blocks(msg, "faster_rcnn", "second_stage_box_predictor")
    kind, bp = msg["second_stage_box_predictor"].oneof()
    if kind != "mask_rcnn_box_predictor":
        raise UnsupportedModelError(f"second stage box predictor {kind!r} has no Keras implementation "
                                    "(mask_rcnn_box_predictor has)")
    predict_masks = bool(bp.get("predict_instance_masks", False))
    stages = int(msg.get("number_of_stages", 2))
    if stages != (3 if predict_masks else 2):
        raise UnsupportedModelError(
            f"faster_rcnn number_of_stages {stages} with predict_instance_masks {str(predict_masks).lower()} is not "
            "supported (2 stages for boxes, 3 with masks); load the model with backend='saved_model'"
        )
    mask_options = _mask_options(bp) if predict_masks else {}
    rpn_hp = msg.get("first_stage_box_predictor_conv_hyperparams")
    _no_batch_norm(ConvHyperparams.from_config(rpn_hp), "first_stage_box_predictor_conv_hyperparams")
    iou = f32(msg.get("first_stage_nms_iou_threshold", 0.7))
    if not 0.0 <= iou <= 1.0:
        raise ConfigError(f"first_stage_nms_iou_threshold must be in [0, 1], got {iou}")
    max_proposals = int(msg.get("first_stage_max_proposals", 300))
    crop = int(msg.get("initial_crop_size", 0))
    if crop <= 0:
        raise ConfigError("faster_rcnn initial_crop_size must be set to a positive crop size")
    _no_batch_norm(ConvHyperparams.from_config(bp.get("fc_hyperparams")),
                   "second_stage_box_predictor.fc_hyperparams")
    post = post_processing_from_config(msg.get("second_stage_post_processing"), "second_stage_post_processing")
    return FasterRcnnConfig(
        num_classes=classes,
        rpn_depth=int(msg.get("first_stage_box_predictor_depth", 512)),
        rpn_kernel_size=int(msg.get("first_stage_box_predictor_kernel_size", 3)),
        rpn_atrous_rate=int(msg.get("first_stage_atrous_rate", 1)),
        first_stage_nms=NmsConfig(
            score_thresh=f32(msg.get("first_stage_nms_score_threshold", 0.0)),
            iou_thresh=iou,
            max_size_per_class=max_proposals,
            max_total_size=max_proposals,
            change_coordinate_frame=False,
        ),
        initial_crop_size=crop,
        maxpool_kernel_size=int(msg.get("maxpool_kernel_size", 0)),
        maxpool_stride=int(msg.get("maxpool_stride", 0)) or 1,
        use_matmul_crop_and_resize=bool(msg.get("use_matmul_crop_and_resize", False)),
        share_box_across_classes=bool(bp.get("share_box_across_classes", False)),
        use_dropout=bool(bp.get("use_dropout", False)),
        second_stage_nms=post.nms,
        score_converter=post.score_converter,
        logit_scale=post.logit_scale,
        predict_masks=predict_masks,
        **mask_options,
    )


def _mask_options(bp: Message) -> dict[str, Any]:
    """The mask head's settings from a ``mask_rcnn_box_predictor`` message."""
    if bool(bp.get("convolve_then_upsample_masks", False)):
        raise UnsupportedModelError("mask_rcnn_box_predictor.convolve_then_upsample_masks has no Keras implementation "
                                    "in odzoo; load the model with backend='saved_model'")
    hp = ConvHyperparams.from_config(bp.get("conv_hyperparams"))
    _no_batch_norm(hp, "second_stage_box_predictor.conv_hyperparams")
    height, width = int(bp.get("mask_height", 15)), int(bp.get("mask_width", 15))
    layers = int(bp.get("mask_prediction_num_conv_layers", 2))
    if height <= 0 or width <= 0 or layers < 1:
        raise ConfigError(f"mask_rcnn_box_predictor mask size {height}x{width} and mask_prediction_num_conv_layers "
                          f"{layers} must be positive")
    agnostic = bool(bp.get("masks_are_class_agnostic", False))
    return {
        "mask_height": height,
        "mask_width": width,
        "mask_num_conv_layers": layers,
        "mask_conv_depth": int(bp.get("mask_prediction_conv_depth", 256)),
        "masks_class_agnostic": agnostic,
        "mask_hyperparams": hp,
    }


def default_mask_conv_depth(feature_channels: int, num_classes: int) -> int:
    """The mask head's depth when configured as 0: a power of two between the feature and class counts,
    weighting the class count's log 3:2 against the feature channels'."""
    log_features = math.log2(feature_channels)
    log_classes = math.log2(num_classes)
    return int(2 ** round((2.0 * log_features + 3.0 * log_classes) / 5.0))


class FasterRcnnFeatureExtractor(Protocol):
    """What a Faster R-CNN feature extractor provides (registered with
    ``@register_feature_extractor(type, meta="faster_rcnn")``; its factory takes the
    ``feature_extractor`` message)."""

    name: str
    first_stage_features_stride: int

    def preprocess(self, resized_images: tf.Tensor) -> tf.Tensor:
        """Resized RGB 0..255 ``[B,H,W,3]`` (padding included) -> the network's input scale."""
        ...

    def build_proposal_model(self) -> keras.Model:
        """Preprocessed images -> ``rpn_features_to_crop`` (stride 16)."""
        ...

    def build_box_classifier_model(self, crop_size: int | None = None) -> keras.Model:
        """Pooled proposal crops -> box classifier features."""
        ...

    def checkpoint_map(self, proposal_model: keras.Model, classifier_model: keras.Model) -> dict[str, keras.Variable]:
        """Checkpoint keys relative to ``model/`` -> variables of both models."""
        ...


def get_feature_extractor(config: Message) -> FasterRcnnFeatureExtractor:
    """The Faster R-CNN feature extractor for a ``feature_extractor`` message."""
    factory = registry.feature_extractor("faster_rcnn", str(config.get("type", "")))
    stride = int(config.get("first_stage_features_stride", 16))
    if stride != 16:
        raise ConfigError(f"feature_extractor.first_stage_features_stride must be 16, got {stride}")
    return factory(config)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------- keras wrapper
class _TwoStageModel(keras.Model):
    """Holds both stages' Keras models (so ``weights`` lists every variable); calling it runs ``predict``."""

    def __init__(self, first_stage: keras.Model, second_stage: keras.Model, owner: FasterRCNN,
                 mask_head: keras.Model | None = None) -> None:
        super().__init__(name="faster_rcnn")
        self.first_stage = first_stage
        self.second_stage = second_stage
        if mask_head is not None:
            self.mask_head = mask_head
        self._owner_predict = owner.predict

    def build(self, input_shape: Any = None) -> None:
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> dict[str, Any]:
        return self._owner_predict(inputs, training=training)


# ---------------------------------------------------------------------------------- model
class FasterRCNN:
    """Two-stage detector: RPN + box classifier as Keras models, the original's pre/post-processing."""

    def __init__(
        self,
        config: FasterRcnnConfig,
        feature_extractor: FasterRcnnFeatureExtractor,
        resizer: Resizer,
        anchor_generator: GridAnchors,
        box_coder: FasterRcnnBoxCoder | None = None,
    ) -> None:
        self.config = config
        self.feature_extractor = feature_extractor
        self.resizer = resizer
        self.anchor_generator = anchor_generator
        self.box_coder = box_coder or FasterRcnnBoxCoder(_BOX_CODER_SCALES)
        self.first_stage_model = self._build_first_stage()
        self.second_stage_model = self._build_second_stage()
        self.mask_model = self._build_mask_head() if config.predict_masks else None
        self.keras_model = _TwoStageModel(self.first_stage_model, self.second_stage_model, self, self.mask_model)

    # ------------------------------------------------------------------ networks
    def _build_first_stage(self) -> keras.Model:
        cfg = self.config
        self.proposal_backbone = self.feature_extractor.build_proposal_model()
        inputs = keras.Input((None, None, 3), name="preprocessed_inputs")
        features = self.proposal_backbone(inputs)
        self.rpn_conv = keras.layers.Conv2D(
            cfg.rpn_depth, cfg.rpn_kernel_size, padding="same", dilation_rate=cfg.rpn_atrous_rate, name="RPNConv"
        )
        rpn_features = keras.layers.ReLU(6.0, name="RPNActivation")(self.rpn_conv(features))
        a = self.anchor_generator.num_anchors_per_location()
        self.rpn_box_head = keras.layers.Conv2D(a * 4, 1, padding="same", name="RPNBoxEncodingPredictor")
        self.rpn_class_head = keras.layers.Conv2D(a * 2, 1, padding="same", name="RPNClassPredictor")
        boxes = keras.layers.Reshape((-1, 4), name="rpn_box_encodings")(self.rpn_box_head(rpn_features))
        objectness = keras.layers.Reshape((-1, 2), name="rpn_objectness")(self.rpn_class_head(rpn_features))
        return keras.Model(
            inputs,
            {
                "rpn_features_to_crop": features,
                "rpn_box_predictor_features": rpn_features,
                "rpn_box_encodings": boxes,
                "rpn_objectness_predictions_with_background": objectness,
            },
            name="faster_rcnn_first_stage",
        )

    def _build_second_stage(self) -> keras.Model:
        cfg = self.config
        crop = cfg.initial_crop_size
        channels = int(self.proposal_backbone.output.shape[-1])
        inputs = keras.Input((crop, crop, channels), name="cropped_proposal_features")
        x = inputs
        if cfg.maxpool_kernel_size:
            x = keras.layers.MaxPooling2D(cfg.maxpool_kernel_size, strides=cfg.maxpool_stride, name="MaxPool2D")(x)
        pooled_size = int(x.shape[1])
        self.classifier_backbone = self.feature_extractor.build_box_classifier_model(pooled_size)
        features = self.classifier_backbone(x)
        flat = keras.layers.GlobalAveragePooling2D(name="AvgPool")(features)
        self.box_head = keras.layers.Dense(cfg.num_box_outputs * 4, name="BoxEncodingPredictor_dense")
        self.class_head = keras.layers.Dense(cfg.num_classes + 1, name="ClassPredictor_dense")
        boxes = keras.layers.Reshape((cfg.num_box_outputs, 4), name="refined_box_encodings")(self.box_head(flat))
        return keras.Model(
            inputs,
            {
                "box_classifier_features": features,
                "refined_box_encodings": boxes,
                "class_predictions_with_background": self.class_head(flat),
            },
            name="faster_rcnn_second_stage",
        )

    def _build_mask_head(self) -> keras.Model:
        """Box classifier features -> mask logits ``[K, mask_height, mask_width, num_masks]``: bilinear
        upsampling (corners aligned), then 3x3 convolutions, the last one giving one map per mask."""
        cfg = self.config
        features = self.second_stage_model.output["box_classifier_features"]
        channels = int(features.shape[-1])
        depth = cfg.mask_conv_depth or default_mask_conv_depth(channels, cfg.num_classes)
        inputs = keras.Input(tuple(features.shape[1:]), name="box_classifier_features")
        size = (cfg.mask_height, cfg.mask_width)
        x = keras.layers.Lambda(
            lambda t: tf.compat.v1.image.resize_bilinear(t, size, align_corners=True), name="MaskUpsample"
        )(inputs)
        self.mask_layers: list[keras.layers.Layer] = []
        for i in range(cfg.mask_num_conv_layers - 1):
            conv = keras.layers.Conv2D(depth, 3, padding="same", name=f"MaskPredictor_conv2d_{i}")
            self.mask_layers.append(conv)
            x = conv(x)
            act = cfg.mask_hyperparams.activation_layer(f"MaskPredictor_activation_{i}")
            if act is not None:
                x = act(x)
        last = keras.layers.Conv2D(cfg.num_masks, 3, padding="same", name="MaskPredictor_last_conv2d")
        self.mask_layers.append(last)
        return keras.Model(inputs, last(x), name="mask_rcnn_mask_head")

    # ------------------------------------------------------------------ checkpoint
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def _head_items(self, scope: str, layer: keras.layers.Layer) -> list[tuple[str, keras.Variable]]:
        index = 2 if self.config.use_dropout else 1  # after Flatten (and Dropout)
        return [(f"{_PREFIX}{scope}/{index}/{attr}", var) for attr, var in variable_attributes(layer)]

    def checkpoint_map(self) -> dict[str, keras.Variable]:
        """Full checkpoint key (no ``/.ATTRIBUTES/VARIABLE_VALUE``) -> variable, for every variable."""
        out = {
            _PREFIX + k: v
            for k, v in self.feature_extractor.checkpoint_map(self.proposal_backbone, self.classifier_backbone).items()
        }
        for scope, layer in ((_RPN_CONV, self.rpn_conv), (_RPN_BOX, self.rpn_box_head), (_RPN_CLASS, self.rpn_class_head)):
            for attr, var in variable_attributes(layer):
                out[f"{_PREFIX}{scope}/{attr}"] = var
        out.update(self._head_items(_BOX_HEAD, self.box_head))
        out.update(self._head_items(_CLASS_HEAD, self.class_head))
        out.update(self._mask_items())
        return out

    def _mask_items(self) -> list[tuple[str, keras.Variable]]:
        # each hidden convolution is followed by a (no-op) BatchNorm slot and an activation
        return [
            (f"{_PREFIX}{_MASK_HEAD}/{3 * i}/{attr}", var)
            for i, layer in enumerate(self.mask_layers if self.mask_model is not None else [])
            for attr, var in variable_attributes(layer)
        ]

    def class_dependent_keys(self) -> list[str]:
        """Checkpoint keys whose shape depends on the number of classes."""
        keys = [k for k, _ in self._head_items(_CLASS_HEAD, self.class_head)]
        if not self.config.share_box_across_classes:
            keys += [k for k, _ in self._head_items(_BOX_HEAD, self.box_head)]
        if self.mask_model is not None and not self.config.masks_class_agnostic:
            keys += [k for k, _ in self._mask_items()[-2:]]
        return keys

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``[B,H,W,3]`` images (RGB 0..255) -> (network input, true shapes ``[B,3]``): resize, then normalize."""
        resized, true_shapes = resize_batch(self.resizer, tf.cast(images, tf.float32))
        return self.feature_extractor.preprocess(resized), true_shapes

    # ------------------------------------------------------------------ first stage
    def anchors(self, image_height: Any, image_width: Any, grid_height: Any, grid_width: Any) -> tf.Tensor:
        """RPN anchors ``[N, 4]`` in pixels, clipped to the ``image_height`` x ``image_width`` input."""
        anchors = self.anchor_generator.generate(grid_height, grid_width)
        h = tf.cast(image_height, tf.float32)
        w = tf.cast(image_width, tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack(anchors, axis=1)
        # Anchor centres lie inside the input, so no clipped anchor has zero area (none is dropped).
        return tf.stack(
            [tf.clip_by_value(ymin, 0.0, h), tf.clip_by_value(xmin, 0.0, w),
             tf.clip_by_value(ymax, 0.0, h), tf.clip_by_value(xmax, 0.0, w)],
            axis=1,
        )

    def proposals(
        self,
        rpn_box_encodings: tf.Tensor,
        rpn_objectness: tf.Tensor,
        anchors: tf.Tensor,
        image_shape: tf.Tensor,
        true_image_shapes: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Proposals ``[B, max_proposals, 4]`` normalized by the input size, and their counts ``[B]``."""
        decoded = self.box_coder.decode(rpn_box_encodings, anchors[tf.newaxis])
        softmax = tf.nn.softmax(rpn_objectness)
        boxes, _, _, _, num = batch_multiclass_nms(
            decoded[:, :, tf.newaxis, :],
            softmax[:, :, 1:2],
            self.config.first_stage_nms,
            clip_window=_clip_window(true_image_shapes),
        )
        h = tf.cast(image_shape[1], tf.float32)
        w = tf.cast(image_shape[2], tf.float32)
        normalized = boxes * tf.stack([1.0 / h, 1.0 / w, 1.0 / h, 1.0 / w])
        return normalized, num

    # ------------------------------------------------------------------ second stage
    def crop_proposals(self, features: tf.Tensor, proposals_normalized: tf.Tensor) -> tf.Tensor:
        """Bilinear crops ``[B * P, crop, crop, C]`` of ``features`` at the normalized proposals.

        Box ``[y1, x1, y2, x2]`` samples ``crop`` points from ``y1 * (H - 1)`` to ``y2 * (H - 1)``
        (likewise along x). With ``use_matmul_crop_and_resize`` a point between the last row and
        one past it still blends the last row (see the module docstring).
        """
        batch = tf.shape(proposals_normalized)[0]
        per_image = tf.shape(proposals_normalized)[1]
        box_indices = tf.repeat(tf.range(batch), per_image)
        size = self.config.initial_crop_size
        boxes = tf.reshape(proposals_normalized, [-1, 4])
        if self.config.use_matmul_crop_and_resize:
            shape = tf.cast(tf.shape(features)[1:3], tf.float32)
            last = tf.tile(shape - 1.0, [2])
            padded_last = tf.tile(shape + 1.0, [2])
            boxes = (boxes * last + 1.0) / padded_last  # same sample points, one-pixel zero border
            features = tf.pad(features, [[0, 0], [1, 1], [1, 1], [0, 0]])
        return tf.image.crop_and_resize(features, boxes, box_indices, [size, size])

    def predict(
        self, preprocessed: tf.Tensor, true_image_shapes: tf.Tensor | None = None, training: bool = False
    ) -> dict[str, Any]:
        """Raw predictions as the original's ``predict`` (both stages).

        ``true_image_shapes`` ``[B, 3]`` (from :meth:`preprocess`) bounds the proposals to the
        unpadded image; without it the whole network input counts as image.
        """
        preprocessed = tf.convert_to_tensor(preprocessed, tf.float32)
        image_shape = tf.shape(preprocessed)
        if true_image_shapes is None:
            true_image_shapes = tf.tile(image_shape[tf.newaxis, 1:], [image_shape[0], 1])
        first = self.first_stage_model(preprocessed, training=training)
        features = first["rpn_features_to_crop"]
        feature_shape = tf.shape(features)
        anchors = self.anchors(image_shape[1], image_shape[2], feature_shape[1], feature_shape[2])
        proposals, num_proposals = self.proposals(
            first["rpn_box_encodings"], first["rpn_objectness_predictions_with_background"], anchors,
            image_shape, true_image_shapes,
        )
        predictions = {
            "preprocessed_inputs": preprocessed,
            "rpn_box_predictor_features": [first["rpn_box_predictor_features"]],
            "rpn_features_to_crop": [features],
            "feature_maps": [features],
            "image_shape": image_shape,
            "rpn_box_encodings": first["rpn_box_encodings"],
            "rpn_objectness_predictions_with_background": first["rpn_objectness_predictions_with_background"],
            "anchors": anchors,
            **self.box_prediction(features, proposals, image_shape, training=training),
            "num_proposals": num_proposals,
        }
        if self.mask_model is not None:
            predictions.update(self.mask_prediction(predictions, true_image_shapes, training=training))
        return predictions

    def mask_prediction(
        self, predictions: dict[str, Any], true_image_shapes: tf.Tensor, training: bool = False
    ) -> dict[str, tf.Tensor]:
        """The third stage: box detections (as :meth:`postprocess` gives them), then masks for them.

        As in the original, the detection boxes (normalized by the true image) crop the features of the
        whole (padded) input; the crops run through the box classifier extractor and the mask head.
        ``mask_predictions`` ``[B * D, num_masks, h, w]`` are logits, ``detection_masks`` ``[B, D, h, w]``
        the sigmoid of each detection's own class mask, relative to its box.
        """
        detections = self.postprocess_boxes(predictions, true_image_shapes)
        boxes = detections["detection_boxes"]
        batch, num = tf.shape(boxes)[0], tf.shape(boxes)[1]
        crops = self.crop_proposals(predictions["rpn_features_to_crop"][0], boxes)
        features = self.second_stage_model(crops, training=training)["box_classifier_features"]
        logits = tf.transpose(self.mask_model(features, training=training), [0, 3, 1, 2])
        height, width = self.config.mask_height, self.config.mask_width
        if self.config.num_masks > 1:
            classes = tf.reshape(tf.cast(detections["detection_classes"], tf.int32), [-1])
            index = tf.range(batch * num) * self.config.num_masks + classes
            chosen = tf.gather(tf.reshape(logits, [-1, height, width]), index)
        else:
            chosen = logits[:, 0]
        return {
            **detections,
            "mask_predictions": logits,
            "detection_masks": tf.reshape(tf.sigmoid(chosen), tf.stack([batch, num, height, width])),
        }

    def box_prediction(
        self, features: tf.Tensor, proposals_normalized: tf.Tensor, image_shape: tf.Tensor, training: bool = False
    ) -> dict[str, tf.Tensor]:
        """The second stage on given proposals ``[B, P, 4]`` (normalized): refined box encodings
        ``[B * P, q, 4]``, class logits ``[B * P, num_classes + 1]``, box classifier features, and
        the proposals in pixels of the ``image_shape`` (``[B, H, W, C]``) input."""
        second = self.second_stage_model(self.crop_proposals(features, proposals_normalized), training=training)
        h = tf.cast(image_shape[1], tf.float32)
        w = tf.cast(image_shape[2], tf.float32)
        return {
            "refined_box_encodings": second["refined_box_encodings"],
            "class_predictions_with_background": second["class_predictions_with_background"],
            "proposal_boxes": proposals_normalized * tf.stack([h, w, h, w]),
            "box_classifier_features": second["box_classifier_features"],
            "proposal_boxes_normalized": proposals_normalized,
            "final_anchors": proposals_normalized,
        }

    # ------------------------------------------------------------------ postprocessing
    def convert_scores(self, logits: tf.Tensor) -> tf.Tensor:
        """The second-stage score converter (with ``logit_scale``)."""
        return convert_scores(logits, self.config.score_converter, self.config.logit_scale)

    def postprocess(self, predictions: dict[str, Any], true_image_shapes: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Detections as the original's ``postprocess``: boxes normalized to the true image, 0-based classes.

        With masks (three stages) the detections :meth:`predict` made for the mask head are returned with
        their ``detection_masks``; predictions without them get the box detections only.
        """
        if "detection_masks" in predictions:
            return {k: predictions[k] for k in (*_DETECTION_KEYS, "detection_masks")}
        return self.postprocess_boxes(predictions, true_image_shapes)

    def postprocess_boxes(
        self, predictions: dict[str, Any], true_image_shapes: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        """Box detections from the second stage's predictions (see :meth:`postprocess`)."""
        proposal_boxes = predictions["proposal_boxes"]
        batch = tf.shape(proposal_boxes)[0]
        num_proposals = self.config.max_proposals
        if true_image_shapes is None:
            image_shape = predictions["image_shape"]
            true_image_shapes = tf.tile(image_shape[tf.newaxis, 1:], [batch, 1])
        q = self.config.num_box_outputs
        encodings = tf.reshape(predictions["refined_box_encodings"], [batch, num_proposals, q, 4])
        logits = tf.reshape(predictions["class_predictions_with_background"], [batch, num_proposals, self.num_classes + 1])
        decoded = self.box_coder.decode(encodings, proposal_boxes[:, :, tf.newaxis, :])
        scores_with_background = self.convert_scores(logits)
        scores = scores_with_background[:, :, 1:]
        # Only the valid (unpadded) proposals take part in NMS: the others score below the threshold.
        valid = tf.range(num_proposals)[tf.newaxis, :] < tf.reshape(predictions["num_proposals"], [-1, 1])
        nms_config = self.config.second_stage_nms
        nms_scores = tf.where(valid[:, :, tf.newaxis], scores, nms_config.score_thresh - 1.0)
        proposal_indices = tf.cast(tf.tile(tf.range(num_proposals)[tf.newaxis], [batch, 1]), tf.float32)
        extra = {"multiclass_scores": scores_with_background, "anchor_indices": proposal_indices}
        window = _clip_window(true_image_shapes)
        if q == 1:
            boxes, det_scores, classes, nms_extra, num = batch_multiclass_nms(
                decoded, nms_scores, nms_config, clip_window=window, additional_fields=extra
            )
            raw_boxes = decoded[:, :, 0, :]
        else:
            boxes, det_scores, classes, nms_extra, num = batch_class_specific_nms(
                decoded, nms_scores, nms_config, window, extra
            )
            best = tf.argmax(logits[:, :, 1:], axis=2, output_type=tf.int32)
            raw_boxes = tf.gather(decoded, best, axis=2, batch_dims=2)
        true = tf.cast(true_image_shapes, tf.float32)
        scale = tf.stack([1.0 / true[:, 0], 1.0 / true[:, 1], 1.0 / true[:, 0], 1.0 / true[:, 1]], axis=1)
        raw_normalized = tf.clip_by_value(raw_boxes * scale[:, tf.newaxis, :], 0.0, 1.0)
        return {
            "detection_boxes": boxes,
            "detection_scores": det_scores,
            "detection_classes": classes,
            "detection_multiclass_scores": nms_extra["multiclass_scores"],
            "detection_anchor_indices": tf.cast(nms_extra["anchor_indices"], tf.int32),
            "num_detections": tf.cast(num, tf.float32),
            "raw_detection_boxes": raw_normalized,
            "raw_detection_scores": scores_with_background,
        }

    def __call__(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """preprocess -> predict -> postprocess on a ``[B,H,W,3]`` batch."""
        preprocessed, true_shapes = self.preprocess(images)
        return self.postprocess(self.predict(preprocessed, true_shapes), true_shapes)


_DETECTION_KEYS = (
    "detection_boxes", "detection_scores", "detection_classes", "detection_multiclass_scores",
    "detection_anchor_indices", "num_detections", "raw_detection_boxes", "raw_detection_scores",
)


def _clip_window(true_image_shapes: tf.Tensor) -> tf.Tensor:
    """``[B, 4]`` windows ``[0, 0, height, width]`` in pixels."""
    true = tf.cast(true_image_shapes, tf.float32)
    zeros = tf.zeros_like(true[:, 0])
    return tf.stack([zeros, zeros, true[:, 0], true[:, 1]], axis=1)


@registry.register_meta_architecture("faster_rcnn")
def build_faster_rcnn(
    msg: Message, *, num_classes: int | None = None, label_map: Mapping[int, str] | None = None
) -> FasterRCNN:
    """A :class:`FasterRCNN` (weights freshly initialised) from the ``model.faster_rcnn`` message
    (``label_map`` is not used: no class-specific settings)."""
    fields.require_blocks(msg, "faster_rcnn", "feature_extractor", "image_resizer", "first_stage_anchor_generator")
    config = faster_rcnn_config(msg, num_classes=num_classes)
    extractor = get_feature_extractor(msg["feature_extractor"])
    return FasterRCNN(
        config,
        extractor,
        resizer_from_config(msg["image_resizer"]),
        grid_anchor_generator_from_config(msg["first_stage_anchor_generator"]),
    )
