"""``odzoo download``, ``odzoo cache ls|verify|rm|prune``, ``odzoo pack`` and ``odzoo import``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from zoo.errors import ArgumentError, ZooError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the hub subcommands to the ``odzoo`` parser."""
    p = sub.add_parser("download", help="download models into the cache (verified, resumable)")
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="registry name or alias (also: an http(s)/file URL or a local archive)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="models downloaded in parallel")
    p.add_argument("--force", action="store_true", help="download again and replace the entry")
    p.add_argument("--from-file", metavar="ARCHIVE",
                   help="install an archive fetched by hand (one NAME; verified like a download)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_download)

    cache = sub.add_parser("cache", help="inspect and maintain the model cache")
    csub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    p = csub.add_parser("ls", help="list cached models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_ls)
    p = csub.add_parser("verify", help="re-hash every file; repair damaged entries or quarantine them")
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every entry")
    p.add_argument("--no-repair", action="store_true", help="only report (file times are still recorded)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_verify)
    p = csub.add_parser("rm", help="remove cached models")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--forget-digest", action="store_true",
                   help="also forget the sha256 recorded on the first download")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_rm)
    p = csub.add_parser("prune", help="remove partial downloads, stale temp folders, and entries as asked")
    p.add_argument("--older-than", metavar="DAYS",
                   help="also remove healthy entries not used for DAYS days")
    p.add_argument("--max-size", metavar="SIZE",
                   help="also remove the least recently used healthy entries until all take at most "
                        "SIZE (e.g. 20G, 500M)")
    p.add_argument("--damaged", action="store_true",
                   help="also remove damaged and quarantined entries (gone for good; "
                        "`odzoo cache verify` repairs them instead)")
    p.add_argument("--dry-run", action="store_true", help="only show what would go")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_prune)
    p = csub.add_parser("dir", help="print the cache folder")
    p.set_defaults(func=_dir)

    p = sub.add_parser("pack", help="write cached models to one tar for an offline machine")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE.tar")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_pack)

    p = sub.add_parser("import", help="install the models of a bundle made by `odzoo pack`")
    p.add_argument("bundle", metavar="BUNDLE.tar")
    p.add_argument("--force", action="store_true",
                   help="replace cached entries built from another archive")
    p.add_argument("--trust", action="store_true",
                   help="trust the bundle for registry models whose digest is not known here: "
                        "record it and replace cached entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_import)


def _emit(args: argparse.Namespace, payload: object, lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=str))
    else:
        for line in lines:
            print(line)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _download(args: argparse.Namespace) -> int:
    from zoo.hub import fetch
    from zoo.hub.fetch import resolve

    if args.from_file and len(args.names) != 1:
        raise _usage("--from-file installs one archive: give exactly one NAME")
    if args.jobs < 1:
        raise _usage("-j/--jobs must be at least 1")
    sources = [resolve(name) for name in args.names]  # unknown names fail before any download

    def one(source):
        return fetch(source, force=args.force, from_file=args.from_file)

    results: list[dict] = []
    failed = 0
    with ThreadPoolExecutor(max_workers=min(args.jobs, len(sources))) as pool:
        futures = [pool.submit(one, s) for s in sources]
        for name, future in zip(args.names, futures):
            try:
                path = future.result()
                results.append({"name": name, "path": str(path), "ok": True})
                if not args.json:
                    print(path)
            except ZooError as exc:
                if len(sources) == 1:
                    raise
                failed += 1
                results.append({"name": name, "ok": False, "error": str(exc)})
                print(f"odzoo download: error: {name}: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    return 2 if failed else 0


def _usage(text: str) -> ZooError:
    return ArgumentError(text)


def _ls(args: argparse.Namespace) -> int:
    from zoo.backends.stored_trace import TraceStore
    from zoo.hub.maintenance import layout_for, list_entries, partial_downloads

    layout = layout_for()
    entries = list_entries(layout)
    parts = partial_downloads(layout)
    traces = TraceStore(layout.root).entries()
    payload = {"cache": str(layout.root), "entries": [asdict(e) for e in entries],
               "partial_downloads": [{"path": str(p), "size_bytes": s} for p, s in parts],
               "traces": [{"path": str(t.folder), "size_bytes": t.size_bytes, "last_used": t.last_used,
                           "model_folder": str(t.model_folder) if t.model_folder else None} for t in traces]}
    lines = [f"cache: {layout.root}"]
    if not entries:
        lines.append("no cached models")
    for e in entries:
        used = time.strftime("%Y-%m-%d", time.localtime(e.last_used)) if e.last_used else "-"
        lines.append(f"{e.name}  {_human(e.size_bytes)}  {e.status}  last used {used}"
                     + (f"  ({e.detail})" if e.detail else ""))
    for p, s in parts:
        lines.append(f"partial download: {p.name} ({_human(s)})")
    if traces:
        lines.append(f"stored traced graphs: {len(traces)} ({_human(sum(t.size_bytes for t in traces))}; "
                     "rebuilt when missing, `odzoo cache prune` removes those of models that are gone)")
    _emit(args, payload, lines)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from zoo.hub.maintenance import layout_for, verify
    from zoo.hub.progress import enabled

    results = verify(layout_for(), args.names or None, repair=not args.no_repair,
                     show=enabled(None))
    lines = [f"{r.name}: {r.status}" + (f" ({r.detail})" if r.detail else "") for r in results]
    if not results:
        lines = ["no cached models"]
    _emit(args, [r.as_dict() for r in results], lines)
    return 0 if all(r.status in ("ok", "repaired") for r in results) else 1


def _rm(args: argparse.Namespace) -> int:
    from zoo.hub.maintenance import entry_name, layout_for, remove

    layout = layout_for()
    names = [entry_name(layout, n) for n in args.names]
    removed = [n for n in names if remove(layout, n, forget_digest=args.forget_digest)]
    _emit(args, {"removed": removed}, [f"removed {n}" for n in removed])
    return 0


def _prune(args: argparse.Namespace) -> int:
    from zoo.hub.maintenance import layout_for, parse_days, parse_size, prune

    days = parse_days(args.older_than) if args.older_than is not None else None
    budget = parse_size(args.max_size) if args.max_size is not None else None
    items = prune(layout_for(), older_than_days=days, max_size=budget, damaged=args.damaged,
                  dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    lines = [f"{verb} {i.kind}: {i.path} ({_human(i.size_bytes)})" for i in items] or ["nothing to prune"]
    total = sum(i.size_bytes for i in items)
    if items:
        lines.append(f"{verb} {len(items)} item(s), {_human(total)}")
    _emit(args, {"dry_run": args.dry_run, "items": [asdict(i) for i in items], "bytes": total}, lines)
    return 0


def _dir(args: argparse.Namespace) -> int:
    from zoo.hub import cache_dir

    print(cache_dir())
    return 0


def _pack(args: argparse.Namespace) -> int:
    from zoo.hub import pack
    from zoo.hub.maintenance import layout_for
    from zoo.hub.progress import enabled
    from zoo.output_path import check_output_path

    layout = layout_for()
    out = check_output_path(args.output, "-o", kind="file", outside=(layout.root, "the cache")).absolute()
    items = pack(layout, args.names, out, show=enabled(None))
    lines = [f"packed {i.name} ({_human(i.size_bytes)})" for i in items] + [f"wrote {out}"]
    _emit(args, {"bundle": str(out), "entries": [i.as_dict() for i in items]}, lines)
    return 0


def _import(args: argparse.Namespace) -> int:
    from zoo.hub import import_bundle
    from zoo.hub.maintenance import layout_for
    from zoo.hub.progress import enabled

    bundle = Path(args.bundle)
    if not bundle.is_file():
        from zoo.errors import NotCachedError

        raise NotCachedError(f"{bundle}: no such bundle file")
    layout = layout_for()
    items = import_bundle(layout, bundle, force=args.force, trust=args.trust, show=enabled(None))
    lines = [f"{i.status} {i.name} -> {layout.entry(i.name)}" + (f" ({i.detail})" if i.detail else "")
             for i in items]
    _emit(args, {"entries": [i.as_dict() for i in items]}, lines)
    return 1 if any(i.status == "kept" for i in items) else 0
