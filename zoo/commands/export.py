"""``odzoo export NAME_OR_DIR --format saved_model|tflite -o DIR``: write a deployable copy of a model."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from ..exporting.exporter import FORMATS
    from ..exporting.tflite_convert import QUANTIZATIONS

    p = sub.add_parser(
        "export", help="export a model as a SavedModel (zoo layout) or a TFLite model",
        description="Export a model (registry name, archive or model folder; run by odzoo's Keras "
                    "implementation) as a SavedModel in the zoo layout or as a TFLite model with the "
                    "detection post-processing inside. Load the result with zoo.load(DIR) / "
                    "backend='saved_model', or backend='tflite'.",
    )
    p.add_argument("model", metavar="NAME_OR_DIR", help="registry name or alias, URL, archive or model folder")
    p.add_argument("--format", "-f", required=True, choices=FORMATS, help="saved_model or tflite")
    p.add_argument("--quantize", "-q", default="none", choices=QUANTIZATIONS,
                   help="TFLite only: none (float32, default), float16, dynamic (int8 weights) or int8 "
                        "(weights and activations; needs --calibration)")
    p.add_argument("--calibration", metavar="IMAGES_DIR", default=None,
                   help="folder of representative images for --quantize int8")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (must not exist, or be empty)")
    p.add_argument("--offline", action="store_true", default=None, help="use the cache only")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ..exporting.exporter import export
    from ..output_path import check_output_path

    check_output_path(args.out, "-o", kind="new_folder")  # named as the command line names it
    # export() checks every argument (and whether the format can take the model) before loading it
    result = export(args.model, args.format, out=args.out, quantize=args.quantize, calibration=args.calibration,
                    offline=args.offline)
    what = "SavedModel (zoo layout)" if result.format == "saved_model" else f"TFLite ({result.quantize})"
    print(f"{result.model}: {what} -> {result.folder}")
    for name in result.files:
        print(f"  {name}")
    return 0

