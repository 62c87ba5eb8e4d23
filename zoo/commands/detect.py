"""``odzoo detect IMAGE... --model NAME``: run a detector, draw or print the detections."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects in images with a zoo model")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--model", "-m", required=True, help="registry name or alias, URL, archive or model folder")
    p.add_argument("--backend", default="keras", choices=("keras", "saved_model", "hub"),
                   help="keras (our implementation, CenterNet), saved_model (the archive's export, any model), hub")
    p.add_argument("--threshold", "-t", type=float, default=0.3, help="minimum score to keep (default 0.3)")
    p.add_argument("--max-detections", type=int, default=None, help="keep at most this many per image")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", "-o", type=Path, help="annotated image to write (one input image only)")
    out.add_argument("--out-dir", type=Path, help="folder for annotated images (<name>.detections.png)")
    p.add_argument("--json", action="store_true", help="print detections as JSON instead of a table")
    p.add_argument("--offline", action="store_true", default=None, help="use the cache only")
    p.set_defaults(func=_detect)


def _detect(args: argparse.Namespace) -> int:
    from ..images import load_image
    from ..loading import load

    if args.out is not None and len(args.images) != 1:
        raise InputError(f"--out takes one image but {len(args.images)} were given; use --out-dir")
    images = [load_image(path) for path in args.images]  # fail on a bad file before loading the model
    detector = load(args.model, backend=args.backend, offline=args.offline)
    report = []
    for path, image in zip(args.images, images):
        result = detector.detect(image, score_threshold=args.threshold, max_detections=args.max_detections)
        target = None
        if args.out is not None:
            target = args.out
        elif args.out_dir is not None:
            target = args.out_dir / f"{Path(path).stem}.detections.png"
        if target is not None:
            from PIL import Image

            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(result.draw(image, score_threshold=args.threshold)).save(target)
        report.append((path, result, target))
    if args.json:
        payload = [
            {"image": str(path), "annotated": str(target) if target else None, **result.to_dict()}
            for path, result, target in report
        ]
        json.dump(payload, sys.stdout, indent=2)
        print()
        return 0
    for path, result, target in report:
        print(f"{path}: {len(result)} detections" + (f" -> {target}" if target else ""))
        for i in range(len(result)):
            x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
            print(f"  {result.labels[i]:<16} {result.scores[i]:.3f}  [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}]")
    return 0
