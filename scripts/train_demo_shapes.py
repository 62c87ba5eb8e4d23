#!/usr/bin/env python3
"""Train the embedded demo detector ``demo_shapes`` and package it as ``zoo/assets/demo_shapes.tar.gz``.

A small CenterNet (MobileNetV2-FPN, depth multiplier 0.35, separable convolutions, 64-filter heads,
256x256 input, 3 classes: circle, square, triangle) is trained from scratch with ``zoo.finetune`` on
synthetic images from ``zoo.datasets.synthetic.make_shapes_dataset`` (training seed 1), evaluated
on held-out images (seed 2), exported in the zoo layout and packed reproducibly. Every random choice
is seeded, so a rerun on the same machine reproduces the weights up to floating-point noise.

    python scripts/train_demo_shapes.py [--steps 1400] [--images 800] [--work DIR]

Writes ``zoo/assets/demo_shapes.tar.gz`` and ``zoo/assets/demo_shapes.json`` (sha256, size, how it
was made, held-out COCO metrics).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_training import IMAGE_SIZE, TRAIN_CONFIG_TAIL, argument_parser, train_and_pack  # noqa: E402

NAME = "demo_shapes"

CONFIG = """\
model {{
  center_net {{
    num_classes: 3
    feature_extractor {{
      type: "mobilenet_v2_fpn_sep_conv"
      depth_multiplier: 0.35
      use_separable_conv: true
    }}
    image_resizer {{
      keep_aspect_ratio_resizer {{
        min_dimension: 256
        max_dimension: 256
        pad_to_max_dimension: true
      }}
    }}
    object_detection_task {{
      task_loss_weight: 1.0
      offset_loss_weight: 1.0
      scale_loss_weight: 0.1
      box_head_num_filters: 64
      localization_loss {{
        l1_localization_loss {{
        }}
      }}
    }}
    object_center_params {{
      object_center_loss_weight: 1.0
      center_head_num_filters: 64
      classification_loss {{
        penalty_reduced_logistic_focal_loss {{
          alpha: 2.0
          beta: 4.0
        }}
      }}
      min_box_overlap_iou: 0.7
      max_box_predictions: 20
    }}
    use_depthwise: true
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
    }}
  }}
  data_augmentation_options {{
    random_adjust_brightness {{
    }}
  }}
""" + TRAIN_CONFIG_TAIL


def main() -> int:
    args = argument_parser(__doc__.split("\n\n")[0], steps=1400, images=800, batch_size=16,
                           learning_rate=2e-3).parse_args()
    train_and_pack(args, name=NAME, config_template=CONFIG, architecture={
        "input": {"resizer": "keep_aspect_ratio", "min_dimension": IMAGE_SIZE, "max_dimension": IMAGE_SIZE,
                  "pad_to_max_dimension": True},
        "meta_architecture": "center_net",
        "feature_extractor": "mobilenet_v2_fpn_sep_conv",
        "depth_multiplier": 0.35,
        "max_detections": 20,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
