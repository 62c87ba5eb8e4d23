"""The ``odzoo`` command line: list, info, download, cache, pack/import, detect, bench, eval, finetune, demo.

Each area registers its subcommands from ``zoo/commands/<area>.py``. A user error prints one line on
stderr and exits with status 2; it never shows a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import ZooError

#: Modules under zoo.commands that provide ``register(subparsers)``, in help order.
COMMAND_MODULES = ("registry", "hub", "detect", "bench", "finetune", "demo")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="odzoo",
        description="The TF2 Detection Model Zoo on current TensorFlow and Keras 3.",
        epilog=(
            "Environment: ODZOO_CACHE, ODZOO_MIRROR, ODZOO_OFFLINE, ODZOO_REGISTRY, ODZOO_QUIET, "
            "ODZOO_TIMEOUT, ODZOO_RETRIES, ODZOO_KEEP_ARCHIVES."
        ),
    )
    parser.add_argument("--version", action="version", version=f"odzoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"zoo.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"zoo.commands.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"odzoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"odzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
