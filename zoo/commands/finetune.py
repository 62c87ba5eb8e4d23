"""``odzoo finetune``: fine-tune a zoo detector (any family) on a COCO-format dataset and export it."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..output_path import check_output_path
from .arguments import input_file, input_folder, number, whole


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` subcommand."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a zoo detector on a COCO-format dataset and export it in the zoo layout",
        description="Fine-tune a zoo CenterNet, SSD/RetinaNet/EfficientDet or Faster/Mask R-CNN (or a pipeline.config, "
                    "from scratch) "
                    "on COCO-format data; "
                    "writes OUT/train/ (training checkpoints), OUT/NAME/ (zoo layout), OUT/NAME.tar.gz and "
                    "OUT/registry.yaml (use it with ODZOO_REGISTRY to load the result by name).",
    )
    p.add_argument("--model", required=True, help="registry name/alias, archive, model folder or pipeline.config")
    p.add_argument("--annotations", required=True, metavar="A.json", help="COCO annotations of the training images")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the training images")
    p.add_argument("--num-classes", type=whole(minimum=1), metavar="K",
                   help="classes to predict (default: the dataset's categories)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=whole(minimum=1), metavar="N", help="training steps (>= 1)")
    length.add_argument("--epochs", type=number(positive=True), metavar="E", help="passes over the dataset (> 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--name", help="name of the exported model (default: MODEL_finetuned)")
    p.add_argument("--batch-size", type=whole(minimum=1), default=8, metavar="B", help="images per step (default 8)")
    p.add_argument("--learning-rate", type=number(positive=True), metavar="LR",
                   help="train with Adam at this peak learning rate (default: the optimizer and learning-rate "
                        "schedule of the model's pipeline.config, stretched to --steps)")
    p.add_argument("--schedule", choices=("cosine", "constant"),
                   help="Adam's schedule after a linear warmup: cosine decay to 0 or constant (default cosine "
                        "with --learning-rate 1e-3; without --learning-rate, --schedule or --warmup-steps the "
                        "pipeline.config's optimizer trains)")
    p.add_argument("--warmup-steps", type=whole(minimum=0), metavar="N",
                   help="Adam's warmup steps (default 10%% of the steps)")
    p.add_argument("--input-size", type=whole(minimum=32), metavar="PX",
                   help="train and export at PX x PX (a multiple of 32)")
    p.add_argument("--checkpoint-every", type=whole(minimum=1), metavar="N",
                   help="save a training checkpoint every N steps")
    p.add_argument("--trainable", default="all", metavar="WHAT",
                   help="what trains: all (default), heads (only the prediction heads, BatchNorm frozen: the "
                        "few-shot recipe) or comma-separated glob patterns of variable names")
    p.add_argument("--no-augment", action="store_true", help="no flip / crop / colour augmentation")
    p.add_argument("--seed", type=whole(minimum=0), default=0, help="random seed (default 0)")
    p.add_argument("--no-saved-model", action="store_true", help="skip the saved_model/ export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, export, print where things went."""
    from .. import settings
    from ..fine_tuning import check_arguments, check_trainable, finetune
    from ..train.trainable import check_trainable_selection

    input_file("--annotations", args.annotations, "COCO annotations JSON")
    input_folder("--images", args.images, "training images")
    check_output_path(args.out, "--out")
    check_arguments(num_classes=args.num_classes, steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                     learning_rate=args.learning_rate, schedule=args.schedule, warmup_steps=args.warmup_steps,
                     checkpoint_every=args.checkpoint_every, out_dir=args.out, name=args.name,
                     input_size=args.input_size, seed=args.seed, recalibrate_batches=25, as_options=True)
    check_trainable(args.model)
    patterns = any(c in args.trainable for c in "*?[/")  # a bare word must be a choice (catches typos)
    trainable = check_trainable_selection(
        [p for p in args.trainable.split(",") if p.strip()] if patterns else args.trainable, as_options=True)
    det = finetune(
        args.model, args.annotations, images=args.images, num_classes=args.num_classes, steps=args.steps,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, schedule=args.schedule,
        warmup_steps=args.warmup_steps, augment=not args.no_augment, checkpoint_every=args.checkpoint_every,
        out_dir=args.out, name=args.name, progress=not settings.quiet(), input_size=args.input_size, seed=args.seed,
        saved_model=not args.no_saved_model, trainable=trainable,
    )
    result = det.finetune_result
    out = Path(args.out)
    print(f"trained {result.steps} steps ({result.optimizer}) in {result.seconds:.1f} s, "
          f"final loss {result.final_loss:.4f}")
    print(f"model folder:  {result.model_dir}")
    print(f"archive:       {result.tarball} ({result.size_bytes} bytes, sha256 {result.sha256})")
    print(f"registry:      {result.registry}")
    print(f"training ckpt: {out / 'train'}")
    print(f"use it:        ODZOO_REGISTRY={result.registry} odzoo bench {result.model_dir.name}")
    return 0
