"""One classification of what a user may name a model by: registry entry, URL, archive or folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from zoo.errors import NotCachedError, UnknownModelError
from zoo.hub.fetch import Source, resolve
from zoo.loading import resolve_spec
from zoo.model_ref import parse_model_ref
from zoo.registry import get


def test_alias_and_canonical_name_give_the_registry_entry() -> None:
    assert parse_model_ref("efficientdet_d0").spec == get("efficientdet_d0_coco17_tpu-32")
    assert parse_model_ref("efficientdet_d0_coco17_tpu-32").spec.name == "efficientdet_d0_coco17_tpu-32"


def test_typo_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownModelError, match="efficientdet_d0"):
        parse_model_ref("efficentdet_d0")


@pytest.mark.parametrize("url", ["https://host/a/model.tar.gz", "http://host/m.tar.gz", "file:///srv/m.tar.gz"])
def test_urls_are_kept_as_urls(url: str) -> None:
    ref = parse_model_ref(url)
    assert (ref.url, ref.spec, ref.path) == (url, None, None)


def test_a_missing_archive_path_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotCachedError, match="no such file or folder"):
        parse_model_ref(str(tmp_path / "missing.tar.gz"))


def test_a_registry_name_wins_over_a_folder_of_the_same_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "efficientdet_d0").mkdir()
    (tmp_path / "my_model").mkdir()
    assert parse_model_ref("efficientdet_d0").spec is not None
    assert parse_model_ref("my_model").path == Path("my_model")


def test_fetch_and_load_read_arguments_the_same_way(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    (folder / "checkpoint").mkdir(parents=True)
    archive = tmp_path / "custom.tar.gz"
    archive.write_bytes(b"")
    assert resolve(str(folder)) == folder.resolve()
    assert resolve_spec(str(folder)) == (None, folder)
    local = resolve(str(archive))
    assert isinstance(local, Source) and local.local and local.name == "custom"
    spec, source = resolve_spec("demo_shapes")
    assert source is spec and resolve("demo_shapes").name == spec.name
