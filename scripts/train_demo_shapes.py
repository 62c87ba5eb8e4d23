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

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAME = "demo_shapes"
TRAIN_SEED = 1
HELDOUT_SEED = 2
IMAGE_SIZE = 256

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
  optimizer {{
    adam_optimizer {{
      learning_rate {{
        cosine_decay_learning_rate {{
          learning_rate_base: {learning_rate}
          total_steps: {steps}
          warmup_learning_rate: {warmup_learning_rate}
          warmup_steps: {warmup_steps}
        }}
      }}
      epsilon: 1e-07
    }}
    use_moving_average: false
  }}
  num_steps: {steps}
  max_number_of_boxes: 100
}}
train_input_reader {{
  label_map_path: "label_map.pbtxt"
}}
eval_config {{
  metrics_set: "coco_detection_metrics"
  batch_size: 1
}}
eval_input_reader {{
  label_map_path: "label_map.pbtxt"
  shuffle: false
  num_epochs: 1
}}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--images", type=int, default=800, help="training images")
    ap.add_argument("--heldout", type=int, default=100, help="held-out images for the reported mAP")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--assets", default=str(ROOT / "zoo" / "assets"))
    args = ap.parse_args()

    import zoo
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.fine_tuning import evaluate_detector

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="odzoo-demo-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        config_path = work / "pipeline.config"
        config_path.write_text(CONFIG.format(
            steps=args.steps, warmup_steps=args.steps // 10, batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_learning_rate=args.learning_rate / 4), encoding="utf-8")
        train_dir = make_shapes_dataset(work / "train", args.images, seed=TRAIN_SEED, image_size=IMAGE_SIZE)
        held_dir = make_shapes_dataset(work / "heldout", args.heldout, seed=HELDOUT_SEED, image_size=IMAGE_SIZE)
        began = time.time()
        det = zoo.finetune(
            config_path, CocoDataset(train_dir / "annotations.json", train_dir / "images"),
            steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
            warmup_steps=args.steps // 10, out_dir=work / "out", name=NAME, seed=0, progress=True,
        )
        seconds = time.time() - began
        result = det.finetune_result
        metrics = evaluate_detector(det, CocoDataset(held_dir / "annotations.json", held_dir / "images"))
        print(metrics.format())
        assets = Path(args.assets)
        assets.mkdir(parents=True, exist_ok=True)
        target = assets / f"{NAME}.tar.gz"
        shutil.copyfile(result.tarball, target)
        import tensorflow as tf

        facts = {
            "name": NAME,
            "file": target.name,
            "sha256": result.sha256,
            "size_bytes": result.size_bytes,
            "archive_top": NAME,
            "num_classes": 3,
            "label_map": {"1": "circle", "2": "square", "3": "triangle"},
            "input": {"resizer": "keep_aspect_ratio", "min_dimension": IMAGE_SIZE, "max_dimension": IMAGE_SIZE,
                      "pad_to_max_dimension": True},
            "meta_architecture": "center_net",
            "feature_extractor": "mobilenet_v2_fpn_sep_conv",
            "depth_multiplier": 0.35,
            "max_detections": 20,
            "heldout_metrics": {k: round(float(v), 4) for k, v in metrics.stats.items()},
            "how_made": {
                "command": "python scripts/train_demo_shapes.py " + " ".join(sys.argv[1:]),
                "train_images": args.images, "train_seed": TRAIN_SEED,
                "heldout_images": args.heldout, "heldout_seed": HELDOUT_SEED,
                "image_size": IMAGE_SIZE, "steps": args.steps, "batch_size": args.batch_size,
                "learning_rate": args.learning_rate, "schedule": "linear warmup (10%) + cosine",
                "init": "random (seed 0), trained from scratch", "augment": True,
                "final_loss": (round(float(result.final_loss), 4) if math.isfinite(result.final_loss) else None),
                "train_seconds": round(seconds, 1),
                "tensorflow": tf.__version__, "machine": platform.machine(),
            },
        }
        (assets / f"{NAME}.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {target} ({result.size_bytes} bytes, sha256 {result.sha256})")
        print(f"held-out mAP@[.5:.95] {metrics.stats['AP']:.4f}, mAP@.5 {metrics.stats['AP50']:.4f}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
