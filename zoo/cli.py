"""The ``odzoo`` command line: list, info, download, cache, pack/import, detect, bench, eval, finetune, export, demo.

Each area registers its subcommands from ``zoo/commands/<area>.py``. A user error (a bad argument,
file or setting) prints one line on stderr and exits with status 2; it never shows a traceback.
Only odzoo's own output is printed: dependency logs appear with ``--verbose`` or ``ODZOO_LOG=info``.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import settings
from .errors import ZooError
from .logs import quiet_dependencies

#: Modules under zoo.commands that provide ``register(subparsers)``, in help order.
COMMAND_MODULES = ("registry", "hub", "detect", "bench", "finetune", "export", "demo")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


VERBOSE_HELP = "also show the log lines and warnings of TensorFlow and other dependencies (or ODZOO_LOG=info)"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .settings import VARIABLES

    parser = _Parser(
        prog="odzoo",
        description="The TF2 Detection Model Zoo on current TensorFlow and Keras 3.",
        epilog="Environment: " + "; ".join(f"{name} ({text})" for name, text in VARIABLES.items()) + ".",
    )
    parser.add_argument("--version", action="version", version=f"odzoo {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"zoo.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"zoo.commands.{name}":
                continue
            raise
        module.register(sub)
    for command in {id(c): c for c in sub.choices.values()}.values():  # `odzoo detect --verbose` works too
        command.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        settings.check_all()
        verbose = args.verbose or settings.verbose()
        with contextlib.nullcontext() if verbose else quiet_dependencies():
            return int(args.func(args) or 0)
    except ZooError as exc:
        print(f"odzoo {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"odzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _one_line(exc: BaseException) -> str:
    """The error message on one line (messages quoting files or parsers may hold line breaks)."""
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
