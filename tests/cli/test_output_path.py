"""One check for every output path (``zoo.output_path``): the same one-line message shape and error
type for files, folders and new folders, and parent folders made for an output removed again when
writing fails."""
from __future__ import annotations

from pathlib import Path

import pytest

from zoo.errors import ArgumentError
from zoo.output_path import check_output_path, created_parents


def test_each_kind_refuses_what_cannot_hold_it(tmp_path: Path) -> None:
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("mine")
    cases = [
        (tmp_path, "file", (".png",), "is a folder; give a file name such as"),
        (tmp_path / "b.jpg", "file", (".png",), "has '.jpg'; use one of .png"),
        (a_file, "folder", (), "is a file; give a folder"),
        (busy, "new_folder", (), "is a folder that is not empty"),
        (a_file / "sub" / "c.png", "file", (".png",), f"{a_file} is a file, so the folder cannot be created"),
        (tmp_path / "cache" / "b.tar", "file", (), f"is inside the cache {tmp_path / 'cache'}"),
    ]
    (tmp_path / "cache").mkdir()
    for path, kind, suffixes, why in cases:
        with pytest.raises(ArgumentError) as caught:
            check_output_path(path, "--out", kind=kind, suffixes=suffixes, outside=(tmp_path / "cache", "the cache"))
        assert str(caught.value).startswith(f"--out {path}: {why}"), caught.value
    assert check_output_path(busy, "--out") == busy  # a folder that may hold files already
    assert check_output_path(tmp_path / "new" / "deeper", "-o", kind="new_folder") == tmp_path / "new" / "deeper"
    assert check_output_path(a_file, "-o", kind="file") == a_file  # an existing file is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "busy", "cache"]  # checks write nothing


def test_parents_made_for_a_failed_write_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "one" / "two" / "out.tar"
    with pytest.raises(OSError), created_parents(target) as made:
        assert made == [tmp_path / "one", tmp_path / "one" / "two"] and target.parent.is_dir()
        raise OSError("disk full")
    assert list(tmp_path.iterdir()) == []
    with created_parents(target):
        target.write_text("done")
    assert target.read_text() == "done"
