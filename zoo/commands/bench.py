"""``odzoo bench`` (accuracy, latency, memory; reports; ``--compare``) and ``odzoo eval`` (COCO statistics)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import DatasetError
from ..output_path import check_output_path
from .arguments import input_file, input_folder, number, probability, whole

EVALUATOR_CHOICES = ("auto", "pycocotools", "faster_coco_eval")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark models: COCO mAP, latency, memory; writes results.json, report.md, speed_accuracy.png",
        description="Benchmark models (names, aliases or fnmatch patterns such as 'ssd_*'). Without --out nothing "
                    "is written: the table is printed. Compare two runs with --compare OLD.json NEW.json.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL_OR_PATTERN")
    data = p.add_argument_group("dataset (any COCO-format data; omit for latency and memory only)")
    data.add_argument("--data", metavar="DIR",
                      help="a folder in COCO layout (annotations/instances_<split>.json + <split>/) "
                           "or odzoo layout (annotations.json + images/)")
    data.add_argument("--coco-dir", metavar="DIR",
                      help="COCO root with annotations/instances_<split>.json and <split>/")
    data.add_argument("--split", default="val2017", help="COCO split for --coco-dir/--data (default val2017)")
    data.add_argument("--annotations", metavar="FILE", help="COCO annotations JSON (with --images)")
    data.add_argument("--images", metavar="DIR", help="folder of the images named in --annotations")
    data.add_argument("--keypoint-annotations", metavar="FILE",
                      help="COCO person-keypoints JSON for keypoint models (default with --coco-dir: "
                           "annotations/person_keypoints_<split>.json when present)")
    data.add_argument("--max-images", type=whole(minimum=1), metavar="N", help="evaluate on the first N images (by id)")
    p.add_argument("--device", default="cpu", help="cpu, gpu:N, gpu (all GPUs, mirrored) or tpu (default cpu)")
    p.add_argument("--backend", metavar="NAME[,NAME...]",
                   help="backend(s) to load each model with, e.g. keras,saved_model,tflite: one report row per "
                        "model and backend (default: zoo.load's choice; a TFLite export runs on tflite)")
    p.add_argument("--out", metavar="DIR", help="write results.json, report.md and speed_accuracy.png here")
    p.add_argument("--json", action="store_true", help="print the results document as JSON")
    p.add_argument("--iterations", type=whole(minimum=1), default=20, metavar="N",
                   help="minimum timed calls at batch 1 (default 20)")
    p.add_argument("--min-duration", type=number(minimum=0.0), default=1.0, metavar="S",
                   help="minimum timed seconds (default 1)")
    p.add_argument("--warmup", type=whole(minimum=0), default=3, metavar="N",
                   help="untimed calls before timing (default 3)")
    p.add_argument("--batch", type=whole(minimum=1), default=1, metavar="N",
                   help="batch size of the throughput measurement")
    p.add_argument("--score-threshold", type=probability(), default=0.0,
                   help="detections kept for mAP, in [0, 1] (default 0.0)")
    p.add_argument("--max-detections", type=whole(minimum=1), default=100,
                   help="detections per image for mAP (default 100)")
    p.add_argument("--evaluator", choices=EVALUATOR_CHOICES, default="auto",
                   help="COCO evaluator (auto: faster_coco_eval when installed)")
    p.add_argument("--no-latency", action="store_true", help="accuracy only")
    p.add_argument("--multi-worker", action="store_true",
                   help="evaluate across the workers named in TF_CONFIG (MultiWorkerMirroredStrategy); one model")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two results.json; exit 1 on regression")
    p.add_argument("--tolerance", type=number(minimum=0.0), default=0.05,
                   help="relative tolerance of --compare (default 0.05: 5%% mAP drop or latency increase)")
    p.set_defaults(func=_bench)

    p = sub.add_parser("eval", help="COCO statistics of a detections file against ground truth")
    p.add_argument("--annotations", required=True, metavar="GT.json", help="COCO ground-truth annotations")
    p.add_argument("--detections", required=True, metavar="DETS.json", help="COCO results (list of detections)")
    p.add_argument("--iou-type", choices=("bbox", "segm", "keypoints"), default="bbox")
    p.add_argument("--evaluator", choices=EVALUATOR_CHOICES, default="auto")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_eval)


# ----------------------------------------------------------------------------- dataset
def dataset_from_args(args: argparse.Namespace):
    """The CocoDataset named by --data / --coco-dir / --annotations + --images, or None."""
    from ..datasets.coco import CocoDataset

    chosen = [n for n in ("data", "coco_dir", "annotations") if getattr(args, n, None)]
    if len(chosen) > 1:
        raise DatasetError("give one of --data, --coco-dir or --annotations/--images, not several")
    if args.annotations or args.images:
        if not (args.annotations and args.images):
            raise DatasetError("--annotations and --images go together: pass both")
        input_file("--annotations", args.annotations, "COCO annotations JSON")
        input_folder("--images", args.images, "images named in --annotations")
        return CocoDataset(args.annotations, args.images)
    root = args.data or args.coco_dir
    if root is None:
        return None
    root = input_folder("--data" if args.data else "--coco-dir", root, "the dataset")
    if args.data and (root / "annotations.json").is_file():
        args.split = None  # odzoo layout: no split
        return CocoDataset(root / "annotations.json", root / "images")
    return CocoDataset.from_coco_dir(root, args.split)


def keypoint_dataset_from_args(args: argparse.Namespace, dataset):
    """Person-keypoint ground truth: --keypoint-annotations, or the COCO layout's file when present."""
    from ..datasets.coco import CocoDataset

    if dataset is None:
        return None
    if args.keypoint_annotations:
        input_file("--keypoint-annotations", args.keypoint_annotations, "COCO person-keypoints JSON")
        return CocoDataset(args.keypoint_annotations, dataset.images_dir)
    root = args.coco_dir or args.data
    if root and args.split:
        path = Path(root) / "annotations" / f"person_keypoints_{args.split}.json"
        if path.is_file():
            return CocoDataset(path, dataset.images_dir)
    return None


# ----------------------------------------------------------------------------- bench
def _options(args: argparse.Namespace):
    """Benchmark options (the numbers were range-checked when parsed)."""
    from ..backends import BACKENDS
    from ..bench.run import BenchOptions
    from ..errors import ArgumentError

    backends = tuple(dict.fromkeys(b.strip() for b in (args.backend or "").split(",") if b.strip()))
    for backend in backends:
        if backend not in BACKENDS:
            raise ArgumentError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if args.backend is not None and not backends:
        raise ArgumentError(f"--backend {args.backend!r} names no backend; choose from {', '.join(BACKENDS)}")
    if len(backends) > 1 and getattr(args, "multi_worker", False):
        raise ArgumentError("--multi-worker evaluates one model on one backend; give one --backend")

    return BenchOptions(
        device=args.device, backend=backends[0] if len(backends) == 1 else None,
        backends=backends if len(backends) > 1 else (), iterations=args.iterations, min_duration_s=args.min_duration,
        warmup=args.warmup, batch=args.batch, max_images=args.max_images, score_threshold=args.score_threshold,
        max_detections=args.max_detections, evaluator=args.evaluator, latency=not args.no_latency,
        split=args.split if (args.coco_dir or args.data) else None,
    )


def _bench(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    if not args.models:
        raise DatasetError("name at least one model or pattern (e.g. 'odzoo bench ssd_*'), or use --compare OLD NEW")
    if args.multi_worker:
        return _multi_worker(args)
    from ..bench.report import markdown
    from ..bench.run import run

    if args.out:
        check_output_path(args.out, "--out")
    options = _options(args)
    dataset = dataset_from_args(args)
    doc = run(args.models, dataset=dataset, options=options, out_dir=args.out,
              keypoint_dataset=keypoint_dataset_from_args(args, dataset))
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(markdown(doc))
        if args.out:
            print(f"reports written to {args.out}/ (results.json, report.md, speed_accuracy.png)")
    failed = [r for r in doc["models"] if "error" in r]
    for rec in failed:
        print(f"odzoo bench: {rec['model']}: {rec['error']}", file=sys.stderr)
    return 1 if failed else 0


def _multi_worker(args: argparse.Namespace) -> int:
    from ..bench.distributed import multiworker_strategy
    from ..bench.run import resolve_models, run_multiworker

    strategy = multiworker_strategy()  # before any other TensorFlow work
    names = resolve_models(args.models)
    if len(names) != 1:
        raise DatasetError(f"--multi-worker evaluates one model; {len(names)} match {args.models}")
    dataset = dataset_from_args(args)
    options = _options(args)
    if dataset is None:
        raise DatasetError("--multi-worker needs a dataset: --data, --coco-dir or --annotations/--images")
    import zoo

    kwargs = {} if options.backend is None else {"backend": options.backend}
    detector = zoo.load(names[0], **kwargs)
    record = run_multiworker(detector, dataset, strategy=strategy, options=options, out_dir=args.out)
    if record is not None:
        print(json.dumps(record, indent=1) if args.json else _format_stats(record["accuracy"]["bbox"]))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from ..bench.compare import compare, has_regression, load

    for path in args.compare:
        input_file("--compare", path, "results.json")

    findings = compare(load(args.compare[0]), load(args.compare[1]), tolerance=args.tolerance)
    if args.json:
        print(json.dumps([{**f.__dict__, "change": f.change} for f in findings], indent=1))
    else:
        for f in findings:
            print(f.line())
    if has_regression(findings):
        print(f"odzoo bench: {sum(f.regression for f in findings)} regression(s) beyond tolerance {args.tolerance}",
              file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- eval
def _format_stats(result: dict) -> str:
    lines = [f"{result['iou_type']}: {result['evaluator']} {result['evaluator_version']}, "
             f"{result['num_images']} images, {result['num_detections']} detections"]
    lines += [f"{name:<6} {value:.4f}" for name, value in result["stats"].items()]
    return "\n".join(lines)


def _eval(args: argparse.Namespace) -> int:
    from ..eval.evaluate import evaluate

    result = evaluate(args.annotations, args.detections, iou_type=args.iou_type, evaluator=args.evaluator)
    print(json.dumps(result.to_dict(), indent=1) if args.json else _format_stats(result.to_dict()))
    return 0
