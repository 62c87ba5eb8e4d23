"""Image files decoded ahead of the model: same pixels as ``load_image``, same detections as ``detect``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.errors import InputError
from zoo.image_pipeline import decoded_images, image_files
from zoo.images import load_image
from zoo.loading import load

CENTERNET = FIXTURES / "tarballs" / "centernet_mobilenetv2fpn_512x512_coco17_od.tar.gz"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    base = np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))
    out = tmp_path / "images"
    out.mkdir()
    Image.fromarray(base).save(out / "b.png")
    Image.fromarray(base[::2, ::2]).save(out / "a.jpg", quality=90)  # another size and format
    Image.fromarray(base[:, ::-1]).convert("RGBA").save(out / "c.png")  # alpha dropped, as load_image does
    (out / "notes.txt").write_text("not an image")
    return out


def test_folders_expand_to_sorted_image_files(folder: Path) -> None:
    files = image_files([folder, folder / "b.png"])
    assert [Path(f).name for f in files] == ["a.jpg", "b.png", "c.png", "b.png"]
    with pytest.raises(InputError, match="does not exist"):
        image_files([folder / "missing.png"])
    empty = folder / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files"):
        image_files(empty)


def test_decoded_images_equal_load_image_in_order(folder: Path) -> None:
    got = list(decoded_images(folder, prefetch=2))
    assert [Path(p).name for p, _ in got] == ["a.jpg", "b.png", "c.png"]
    for path, image in got:
        np.testing.assert_array_equal(image, load_image(path))


def test_a_bad_file_raises_one_input_error_when_reached(folder: Path) -> None:
    (folder / "d.png").write_text("not a png")
    seen = []
    with pytest.raises(InputError, match="cannot read image"):
        for path, _ in decoded_images(folder):
            seen.append(Path(path).name)
    assert seen == ["a.jpg", "b.png", "c.png"]
    with pytest.raises(InputError, match="prefetch"):
        list(decoded_images(folder, prefetch=0))


def test_detect_files_gives_what_detect_gives(folder: Path, tmp_path: Path) -> None:
    det = load(str(CENTERNET), cache_dir=tmp_path / "cache")
    results = list(det.detect_files(folder, score_threshold=0.3))
    assert [Path(p).name for p, _, _ in results] == ["a.jpg", "b.png", "c.png"]
    for path, image, found in results:
        want = det.detect(load_image(path), score_threshold=0.3)
        assert len(found) == len(want) > 0
        np.testing.assert_array_equal(found.classes, want.classes)  # same detections, same order
        np.testing.assert_allclose(found.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(found.scores, want.scores, atol=1e-6)
        assert image.shape == load_image(path).shape
    # batch_size groups consecutive same-size images into one call (b.png alone: a.jpg is smaller)
    batched = list(det.detect_files([folder / "b.png", folder / "b.png"], batch_size=2, max_detections=5))
    assert len(batched) == 2 and all(len(r) == 5 for _, _, r in batched)
    with pytest.raises(InputError, match="batch_size"):
        list(det.detect_files(folder, batch_size=0))


def test_cli_detect_takes_a_folder(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from zoo.cli import main

    out = tmp_path / "drawn"
    code = main(["detect", str(folder), "--model", str(CENTERNET), "--threshold", "0.5", "--out-dir", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    payload = json.loads(capsys.readouterr().out)
    assert [Path(p["image"]).name for p in payload] == ["a.jpg", "b.png", "c.png"]
    assert sorted(p.name for p in out.iterdir()) == ["a.detections.png", "b.detections.png", "c.detections.png"]
    assert main(["detect", str(folder / "nothing"), "--model", str(CENTERNET)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_prefetched_keeps_order_and_raises_the_decoders_own_error() -> None:
    from zoo.errors import DatasetError
    from zoo.image_pipeline import prefetched

    def decode(n: int) -> np.ndarray:
        if n == 3:
            raise DatasetError(f"image {n} is broken")
        return np.full((2 + n, 3, 3), n, np.uint8)

    got = []
    with pytest.raises(DatasetError, match="image 3 is broken"):
        for image in prefetched(decode, list(range(6)), prefetch=4):
            got.append(image)
    assert [int(im[0, 0, 0]) for im in got] == [0, 1, 2] and [im.shape[0] for im in got] == [2, 3, 4]
    assert len(list(prefetched(decode, [5, 0]))) == 2
