"""``odzoo detect IMAGE... --model NAME``: run a detector, draw or print the detections."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backends import BACKENDS
from ..errors import ArgumentError
from ..files import written_beside
from ..output_path import check_output_path
from .arguments import IMAGE_SUFFIXES, probability, whole


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detect", help="detect objects in images with a zoo model")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG, ...) or folders of them; decoded in parallel ahead of the model")
    p.add_argument("--model", "-m", required=True, help="registry name or alias, URL, archive or model folder")
    p.add_argument("--backend", default="keras", choices=BACKENDS,
                   help="keras (our Keras implementation, every family), saved_model (the archive's export), "
                        "hub (TF Hub), tflite (a folder written by odzoo export --format tflite)")
    p.add_argument("--threshold", "-t", type=probability(), default=0.3,
                   help="minimum score to keep, in [0, 1] (default 0.3)")
    p.add_argument("--max-detections", type=whole(minimum=1), default=None, metavar="N",
                   help="keep at most N (>= 1) per image")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--out", "-o", type=Path,
                     help=f"annotated image to write (one input image only; {', '.join(IMAGE_SUFFIXES)})")
    out.add_argument("--out-dir", type=Path, help="folder for annotated images (<name>.detections.png)")
    p.add_argument("--json", action="store_true", help="print detections as JSON instead of a table")
    p.add_argument("--offline", action="store_true", default=None, help="use the cache only")
    p.set_defaults(func=_detect)


def _targets(args: argparse.Namespace) -> list[Path | None]:
    """Where each annotated image goes, checked before any model is loaded."""
    if args.out is not None:
        if len(args.images) != 1:
            raise ArgumentError(f"--out takes one image but {len(args.images)} were given; use --out-dir")
        return [check_output_path(args.out, "--out", kind="file", suffixes=IMAGE_SUFFIXES)]
    if args.out_dir is not None:
        folder = check_output_path(args.out_dir, "--out-dir")
        targets = [folder / f"{Path(path).stem}.detections.png" for path in args.images]
        seen: dict[Path, str] = {}
        for path, target in zip(args.images, targets):
            if target in seen:
                raise ArgumentError(f"{seen[target]} and {path} would both be drawn to {target}; "
                                    "detect them in separate runs or rename one")
            if target.is_dir():
                raise ArgumentError(f"--out-dir: {target} is a folder; remove it or choose another --out-dir")
            seen[target] = path
        return list(targets)
    return [None] * len(args.images)


def _save(picture, target: Path) -> None:
    """Write the image whole or not at all (a temporary file renamed into place)."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions()[target.suffix.lower()]
    with written_beside(target) as part:
        Image.fromarray(picture).save(part, format=fmt)


def _detect(args: argparse.Namespace) -> int:
    from ..image_pipeline import image_files
    from ..images import check_image_file
    from ..loading import load, resolve_spec

    resolve_spec(args.model)  # an unknown name fails here, with suggestions
    args.images = image_files(args.images)  # folders expanded; a missing file fails before loading the model
    targets = dict(zip(args.images, _targets(args)))
    for path in args.images:  # headers only: an unreadable or oversized file fails before loading the model
        check_image_file(path)

    detector = load(args.model, backend=args.backend, offline=args.offline)
    report = []
    for path, image, result in detector.detect_files(
        args.images, score_threshold=args.threshold, max_detections=args.max_detections
    ):
        target = targets[path]
        if target is not None:
            _save(result.draw(image, score_threshold=args.threshold), target)
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
