"""Calling the ``odzoo`` command line in-process and reading its one-line errors."""
from __future__ import annotations

import pytest

from zoo.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``odzoo ARGV...``."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single non-empty line of ``err``; fails on tracebacks and multi-line errors."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]
