"""``odzoo finetune``: fine-tune a zoo CenterNet on a COCO-format dataset and export it."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` subcommand."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a CenterNet on a COCO-format dataset and export it in the zoo layout",
        description="Fine-tune a zoo CenterNet (or a pipeline.config, from scratch) on COCO-format data; "
                    "writes OUT/train/ (training checkpoints), OUT/NAME/ (zoo layout), OUT/NAME.tar.gz and "
                    "OUT/registry.yaml (use it with ODZOO_REGISTRY to load the result by name).",
    )
    p.add_argument("--model", required=True, help="registry name/alias, archive, model folder or pipeline.config")
    p.add_argument("--annotations", required=True, metavar="A.json", help="COCO annotations of the training images")
    p.add_argument("--images", required=True, metavar="DIR", help="folder of the training images")
    p.add_argument("--num-classes", type=int, metavar="K", help="classes to predict (default: the dataset's categories)")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, metavar="N", help="training steps")
    length.add_argument("--epochs", type=float, metavar="E", help="passes over the dataset")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--name", help="name of the exported model (default: MODEL_finetuned)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="images per step (default 8)")
    p.add_argument("--learning-rate", type=float, default=1e-3, metavar="LR", help="peak learning rate (default 1e-3)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="after a linear warmup: cosine decay to 0 or constant (default cosine)")
    p.add_argument("--warmup-steps", type=int, metavar="N", help="warmup steps (default 10%% of the steps)")
    p.add_argument("--input-size", type=int, metavar="PX", help="train and export at PX x PX (a multiple of 32)")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="save a training checkpoint every N steps")
    p.add_argument("--no-augment", action="store_true", help="no flip / crop / colour augmentation")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-saved-model", action="store_true", help="skip the saved_model/ export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, export, print where things went."""
    from ..errors import ConfigError
    from ..fine_tuning import finetune

    for flag in ("steps", "batch_size", "num_classes", "checkpoint_every"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    progress = not os.environ.get("ODZOO_QUIET")
    det = finetune(
        args.model, args.annotations, images=args.images, num_classes=args.num_classes, steps=args.steps,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate, schedule=args.schedule,
        warmup_steps=args.warmup_steps, augment=not args.no_augment, checkpoint_every=args.checkpoint_every,
        out_dir=args.out, name=args.name, progress=progress, input_size=args.input_size, seed=args.seed,
        saved_model=not args.no_saved_model,
    )
    result = det.finetune_result
    out = Path(args.out)
    print(f"trained {result.steps} steps in {result.seconds:.1f} s, final loss {result.final_loss:.4f}")
    print(f"model folder:  {result.model_dir}")
    print(f"archive:       {result.tarball} ({result.size_bytes} bytes, sha256 {result.sha256})")
    print(f"registry:      {result.registry}")
    print(f"training ckpt: {out / 'train'}")
    print(f"use it:        ODZOO_REGISTRY={result.registry} odzoo bench {result.model_dir.name}")
    return 0
