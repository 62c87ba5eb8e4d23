"""``odzoo list`` and ``odzoo info``: browse the registry."""
from __future__ import annotations

import argparse
import json

from ..registry import ModelSpec, get, list_models


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registry models (fnmatch PATTERN on names and aliases)")
    p.add_argument("pattern", nargs="?", default=None, help="e.g. 'centernet*' or '*_kpts*'")
    p.add_argument("--family", help="centernet, efficientdet, ssd, faster_rcnn, mask_rcnn, ...")
    p.add_argument("--outputs", action="append", choices=("boxes", "keypoints", "masks"),
                   help="keep models with this output (repeatable)")
    p.add_argument("--kind", choices=("detector", "checkpoint"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_list)

    p = sub.add_parser("info", help="everything the registry knows about one model")
    p.add_argument("name", help="canonical name or alias")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_info)


def _list(args: argparse.Namespace) -> int:
    filters = {k: v for k, v in (("family", args.family), ("kind", args.kind), ("outputs", args.outputs)) if v}
    specs = list_models(args.pattern, **filters)
    if args.json:
        print(json.dumps([_row(s) for s in specs], indent=2))
        return 0
    if not specs:
        families = sorted({s.family for s in list_models()})
        hint = f" (families: {', '.join(families)})" if args.family else ""
        print(f"no model matches{hint}")
        return 0
    width = max(len(s.name) for s in specs)
    print(f"{'NAME'.ljust(width)}  {'ALIAS'.ljust(32)}  {'mAP':>9}  {'ms':>5}  OUTPUTS")
    for s in specs:
        alias = s.aliases[0] if s.aliases else ""
        mAP = s.published.map_as_listed or "--"
        ms = f"{s.published.speed_ms:.0f}" if s.published.speed_ms is not None else "--"
        print(f"{s.name.ljust(width)}  {alias.ljust(32)}  {mAP:>9}  {ms:>5}  {'/'.join(s.outputs)}")
    return 0


def _row(s: ModelSpec) -> dict:
    return {
        "name": s.name, "aliases": list(s.aliases), "display_name": s.display_name, "kind": s.kind,
        "family": s.family, "outputs": list(s.outputs), "box_map": s.published.box_map,
        "map_as_listed": s.published.map_as_listed, "speed_ms": s.published.speed_ms, "url": s.url,
    }


def _info(args: argparse.Namespace) -> int:
    spec = get(args.name)
    if args.json:
        print(json.dumps(spec.summary(), indent=2, default=str))
        return 0
    p = spec.published
    lines = [
        f"{spec.display_name}  ({spec.name})",
        f"  aliases:        {', '.join(spec.aliases) or '-'}",
        f"  kind:           {spec.kind}, family {spec.family}, meta-architecture {spec.meta_architecture}",
        f"  backbone:       {spec.feature_extractor}",
        f"  input:          {_input(spec)}",
        f"  outputs:        {', '.join(spec.outputs)}; classes {spec.num_classes}; max detections {spec.max_detections}",
        f"  published:      COCO mAP {p.map_as_listed or '--'}, {p.speed_ms if p.speed_ms is not None else '--'} ms",
        f"  measured how:   {p.source or 'unknown'}",
        f"  url:            {spec.url}",
        f"  archive folder: {spec.archive_top}",
        f"  sha256:         {spec.sha256 or 'not published (recorded on first download)'}",
        f"  size:           {spec.size_bytes if spec.size_bytes else 'unknown'}",
        f"  TF Hub:         {spec.tfhub or '-'}",
        f"  license:        {spec.license}",
    ]
    if p.notes:
        lines.append(f"  notes:          {p.notes}")
    print("\n".join(lines))
    return 0


def _input(spec: ModelSpec) -> str:
    i = spec.input
    if i is None:
        return "-"
    if i.resizer == "fixed_shape":
        return f"fixed {i.height}x{i.width}"
    pad = ", padded to square" if i.pad_to_max_dimension else ""
    return f"keep aspect ratio, min {i.min_dimension} max {i.max_dimension}{pad}"
