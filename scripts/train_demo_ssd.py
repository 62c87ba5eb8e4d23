#!/usr/bin/env python3
"""Train the embedded demo detector ``demo_ssd_shapes`` and package it as ``zoo/assets/demo_ssd_shapes.tar.gz``.

A small SSD MobileNetV2 FPNLite (the layout of ``ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8``
at depth multiplier 0.35: separable convolutions, FPN levels 3-5 of depth 128 x 0.35, a shared
separable box/class tower of depth 64 with two layers, 256x256 fixed-shape input, 3 classes:
circle, square, triangle) is trained from scratch with ``zoo.finetune`` on the same synthetic images
as ``demo_shapes`` (``scripts/demo_training.py``: training seed 1, held-out seed 2), exported in the
zoo layout (checkpoint, pipeline.config, label map; no SavedModel, to keep the archive small) and
packed reproducibly.

    python scripts/train_demo_ssd.py [--steps 450] [--images 800] [--work DIR]

Writes ``zoo/assets/demo_ssd_shapes.tar.gz`` and ``zoo/assets/demo_ssd_shapes.json`` (sha256, size,
how it was made, held-out COCO metrics).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_training import IMAGE_SIZE, TRAIN_CONFIG_TAIL, argument_parser, train_and_pack  # noqa: E402

NAME = "demo_ssd_shapes"

CONFIG = """\
model {{
  ssd {{
    num_classes: 3
    inplace_batchnorm_update: true
    freeze_batchnorm: false
    box_coder {{
      faster_rcnn_box_coder {{
        y_scale: 10.0
        x_scale: 10.0
        height_scale: 5.0
        width_scale: 5.0
      }}
    }}
    matcher {{
      argmax_matcher {{
        matched_threshold: 0.5
        unmatched_threshold: 0.5
        ignore_thresholds: false
        negatives_lower_than_unmatched: true
        force_match_for_each_row: true
        use_matmul_gather: true
      }}
    }}
    similarity_calculator {{
      iou_similarity {{
      }}
    }}
    encode_background_as_zeros: true
    anchor_generator {{
      multiscale_anchor_generator {{
        min_level: 3
        max_level: 5
        anchor_scale: 4.0
        aspect_ratios: [1.0, 2.0, 0.5]
        scales_per_octave: 2
      }}
    }}
    image_resizer {{
      fixed_shape_resizer {{
        height: 256
        width: 256
      }}
    }}
    box_predictor {{
      weight_shared_convolutional_box_predictor {{
        depth: 64
        class_prediction_bias_init: -4.6
        conv_hyperparams {{
          activation: RELU_6
          regularizer {{
            l2_regularizer {{
              weight: 0.00004
            }}
          }}
          initializer {{
            random_normal_initializer {{
              stddev: 0.01
              mean: 0.0
            }}
          }}
          batch_norm {{
            scale: true
            decay: 0.997
            epsilon: 0.001
          }}
        }}
        num_layers_before_predictor: 2
        share_prediction_tower: true
        use_depthwise: true
        kernel_size: 3
      }}
    }}
    feature_extractor {{
      type: "ssd_mobilenet_v2_fpn_keras"
      use_depthwise: true
      fpn {{
        min_level: 3
        max_level: 5
        additional_layer_depth: 128
      }}
      min_depth: 8
      depth_multiplier: 0.35
      conv_hyperparams {{
        activation: RELU_6
        regularizer {{
          l2_regularizer {{
            weight: 0.00004
          }}
        }}
        initializer {{
          random_normal_initializer {{
            stddev: 0.01
            mean: 0.0
          }}
        }}
        batch_norm {{
          scale: true
          decay: 0.997
          epsilon: 0.001
        }}
      }}
      override_base_feature_extractor_hyperparams: true
    }}
    loss {{
      classification_loss {{
        weighted_sigmoid_focal {{
          alpha: 0.25
          gamma: 2.0
        }}
      }}
      localization_loss {{
        weighted_smooth_l1 {{
        }}
      }}
      classification_weight: 1.0
      localization_weight: 1.0
    }}
    normalize_loss_by_num_matches: true
    normalize_loc_loss_by_codesize: true
    post_processing {{
      batch_non_max_suppression {{
        score_threshold: 1e-8
        iou_threshold: 0.6
        max_detections_per_class: 20
        max_total_detections: 20
      }}
      score_converter: SIGMOID
    }}
  }}
}}
train_config {{
  batch_size: {batch_size}
  data_augmentation_options {{
    random_horizontal_flip {{
    }}
  }}
  data_augmentation_options {{
    random_crop_image {{
      min_object_covered: 0.0
      min_aspect_ratio: 0.75
      max_aspect_ratio: 3.0
      min_area: 0.75
      max_area: 1.0
      overlap_thresh: 0.0
    }}
  }}
""" + TRAIN_CONFIG_TAIL


def main() -> int:
    args = argument_parser(__doc__.split("\n\n")[0], steps=450, images=800, batch_size=16,
                           learning_rate=3e-3).parse_args()
    train_and_pack(args, name=NAME, config_template=CONFIG, saved_model=False, architecture={
        "input": {"resizer": "fixed_shape", "height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "meta_architecture": "ssd",
        "feature_extractor": "ssd_mobilenet_v2_fpn_keras",
        "depth_multiplier": 0.35,
        "max_detections": 20,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
