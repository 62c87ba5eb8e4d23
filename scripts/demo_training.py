"""What the scripts that train odzoo's embedded demo detectors share: train a ``pipeline.config``
from scratch on synthetic shapes with ``zoo.finetune``, score it on held-out images and pack it,
with a JSON of facts, into ``zoo/assets/``.

A script supplies the config text (a ``str.format`` template with ``{steps}``, ``{batch_size}``,
``{learning_rate}``, ``{warmup_learning_rate}`` and ``{warmup_steps}``), the model's name and the
facts that describe its architecture; :func:`train_and_pack` does the rest.
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

TRAIN_SEED = 1
HELDOUT_SEED = 2
IMAGE_SIZE = 256
LABEL_MAP = {"1": "circle", "2": "square", "3": "triangle"}


#: The end of both demo configs: Adam with warmup and cosine (formatted with the run's
#: arguments), the step count, and the input readers and evaluation settings.
TRAIN_CONFIG_TAIL = """\
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


def argument_parser(description: str, *, steps: int, images: int, batch_size: int,
                    learning_rate: float) -> argparse.ArgumentParser:
    """The options every demo training script takes, with the script's defaults."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--images", type=int, default=images, help="training images")
    ap.add_argument("--heldout", type=int, default=100, help="held-out images for the reported mAP")
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--learning-rate", type=float, default=learning_rate)
    ap.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--assets", default=str(ROOT / "zoo" / "assets"))
    return ap


def train_and_pack(args: argparse.Namespace, *, name: str, config_template: str,
                   architecture: Mapping[str, Any], saved_model: bool = True) -> dict[str, Any]:
    """Train ``config_template`` (formatted with ``args``) from random weights (seed 0) on
    ``args.images`` synthetic images (seed :data:`TRAIN_SEED`), warmup 10% then cosine, evaluate on
    ``args.heldout`` images (seed :data:`HELDOUT_SEED`), copy the packed archive to
    ``args.assets/<name>.tar.gz`` and write ``args.assets/<name>.json``. ``architecture``: facts
    merged into the JSON (meta-architecture, feature extractor, input, ...). Returns the facts."""
    sys.path.insert(0, str(ROOT))
    import tensorflow as tf

    import zoo
    from zoo.datasets.coco import CocoDataset
    from zoo.datasets.synthetic import make_shapes_dataset
    from zoo.fine_tuning import evaluate_detector

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix=f"odzoo-{name}-train-"))
    work.mkdir(parents=True, exist_ok=True)
    warmup_steps = args.steps // 10
    try:
        config_path = work / "pipeline.config"
        config_path.write_text(config_template.format(
            steps=args.steps, warmup_steps=warmup_steps, batch_size=args.batch_size,
            learning_rate=args.learning_rate, warmup_learning_rate=args.learning_rate / 4), encoding="utf-8")
        train_dir = make_shapes_dataset(work / "train", args.images, seed=TRAIN_SEED, image_size=IMAGE_SIZE)
        held_dir = make_shapes_dataset(work / "heldout", args.heldout, seed=HELDOUT_SEED, image_size=IMAGE_SIZE)
        began = time.time()
        det = zoo.finetune(
            config_path, CocoDataset(train_dir / "annotations.json", train_dir / "images"),
            steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
            warmup_steps=warmup_steps, out_dir=work / "out", name=name, seed=0, progress=True,
            saved_model=saved_model,
        )
        seconds = time.time() - began
        result = det.finetune_result
        metrics = evaluate_detector(det, CocoDataset(held_dir / "annotations.json", held_dir / "images"))
        print(metrics.format())
        assets = Path(args.assets)
        assets.mkdir(parents=True, exist_ok=True)
        target = assets / f"{name}.tar.gz"
        shutil.copyfile(result.tarball, target)
        script = Path(sys.argv[0]).name
        facts = {
            "name": name,
            "file": target.name,
            "sha256": result.sha256,
            "size_bytes": result.size_bytes,
            "archive_top": name,
            "num_classes": len(LABEL_MAP),
            "label_map": dict(LABEL_MAP),
            **architecture,
            "heldout_metrics": {k: round(float(v), 4) for k, v in metrics.stats.items()},
            "how_made": {
                "command": f"python scripts/{script} " + " ".join(sys.argv[1:]),
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
        (assets / f"{name}.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {target} ({result.size_bytes} bytes, sha256 {result.sha256})")
        print(f"held-out mAP@[.5:.95] {metrics.stats['AP']:.4f}, mAP@.5 {metrics.stats['AP50']:.4f}")
        return facts
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
