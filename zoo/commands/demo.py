"""``odzoo demo``: the whole tour, offline, on the embedded ``demo_shapes`` detector.

Loads ``demo_shapes`` (packaged with odzoo, so nothing is downloaded), generates held-out synthetic
images, detects on them, runs the COCO evaluation and the benchmark report, and draws the
detections of one image. Prints where everything was written.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

from ..output_path import check_output_path
from .arguments import probability, whole

DEMO_MODEL = "demo_shapes"
#: Seed of the demo's held-out images (the model was trained on seed 1 and reported on seed 2).
DEMO_SEED = 7
DEMO_IMAGES = 24
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="offline tour on the embedded demo detector: detect, evaluate, benchmark, draw",
        description="Run the embedded demo_shapes detector on freshly generated held-out images: COCO "
                    "evaluation, benchmark report and an annotated image. Works offline.",
    )
    p.add_argument("--out", metavar="DIR", help="output folder (default: a new temporary folder)")
    p.add_argument("--image", metavar="PATH", help="also detect on this image and draw the result")
    p.add_argument("--images", type=whole(minimum=1), default=DEMO_IMAGES, metavar="N",
                   help=f"held-out images to generate (default {DEMO_IMAGES})")
    p.add_argument("--score-threshold", type=probability(), default=0.3,
                   help="threshold of the drawings, in [0, 1] (default 0.3)")
    p.set_defaults(func=run)


def load_demo_detector() -> Any:
    """The embedded detector, through its registry entry ``demo_shapes`` (a packaged, pinned archive)."""
    import zoo

    return zoo.load(DEMO_MODEL, progress=False)


def run_demo(out: Path, *, images: int = DEMO_IMAGES, extra_image: str | None = None,
             score_threshold: float = 0.3) -> dict[str, Path]:
    """Do the tour into ``out``; returns what was written, by role."""
    import numpy as np
    from PIL import Image

    from ..bench.run import BenchOptions
    from ..bench.run import run as bench_run
    from ..datasets.coco import CocoDataset
    from ..datasets.synthetic import make_shapes_dataset
    from ..errors import ZooError
    from ..images import load_image

    out.mkdir(parents=True, exist_ok=True)
    data_dir = make_shapes_dataset(out / "heldout", images, seed=DEMO_SEED, image_size=256)
    dataset = CocoDataset(data_dir / "annotations.json", data_dir / "images")
    written: dict[str, Path] = {"heldout images": data_dir / "images"}

    # the benchmark loads the model itself (so load and first-call times are real), detects on
    # every held-out image, evaluates, and keeps the COCO results next to its reports
    formats = ("json", "md", "png") if importlib.util.find_spec("matplotlib") else ("json", "md")
    options = BenchOptions(iterations=10, min_duration_s=0.5, warmup=2)
    doc = bench_run([DEMO_MODEL], dataset=dataset, options=options, out_dir=out / "bench", formats=formats)
    record = doc["models"][0]
    if "error" in record:
        raise ZooError(f"the demo model failed: {record['error']}")
    written["detections"] = Path(record["detections_file"])
    metrics = record["accuracy"]["bbox"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    written["metrics"] = out / "metrics.json"
    written["benchmark"] = out / "bench" / "report.md"

    det = load_demo_detector()
    image_id = dataset.image_ids[0]
    image = dataset.load_image(image_id)
    first = (image, det.detect(image))
    image, found = first
    Image.fromarray(found.draw(image, score_threshold=score_threshold)).save(out / "annotated.png")
    written["annotated"] = out / "annotated.png"
    if extra_image:
        picture = np.asarray(load_image(extra_image))
        drawn = det.detect(picture).draw(picture, score_threshold=score_threshold)
        target = out / f"annotated_{Path(extra_image).stem}.png"
        Image.fromarray(drawn).save(target)
        written["your image"] = target
    return written


def run(args: argparse.Namespace) -> int:
    """Run the demo and print where things went."""
    from ..images import load_image

    if args.out:
        check_output_path(args.out, "--out")
    if args.image:
        load_image(args.image)  # a bad picture fails now, not after the tour
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="odzoo-demo-"))
    written = run_demo(out, images=args.images, extra_image=args.image, score_threshold=args.score_threshold)
    stats = json.loads(written["metrics"].read_text(encoding="utf-8"))["stats"]
    print(f"{DEMO_MODEL} on {args.images} generated held-out images: "
          f"mAP@[.5:.95] {stats['AP']:.3f}, mAP@.5 {stats['AP50']:.3f}")
    for role, path in written.items():
        print(f"{role + ':':<16}{path}")
    print(f"everything is in {out}")
    return 0
