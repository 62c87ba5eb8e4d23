"""Input normalization: arrays, lists, batches, tensors, PIL images, paths; clear InputErrors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import INPUT_IMAGE
from zoo.errors import InputError
from zoo.images import load_image, normalize_images, to_rgb_uint8


def test_single_array_is_single() -> None:
    batch = normalize_images(np.zeros((5, 7, 3), np.uint8))
    assert batch.single and not batch.from_batch and len(batch) == 1 and batch[0].shape == (5, 7, 3)


def test_batch_and_tensor_are_lists() -> None:
    batch = normalize_images(tf.zeros([2, 5, 7, 3], tf.uint8))
    assert not batch.single and batch.from_batch and len(batch) == 2 and batch.same_size


def test_list_of_different_sizes() -> None:
    batch = normalize_images([np.zeros((5, 7, 3), np.uint8), np.zeros((9, 4, 3), np.uint8)])
    assert not batch.single and not batch.from_batch and not batch.same_size
    assert [im.shape for im in batch] == [(5, 7, 3), (9, 4, 3)]


def test_grayscale_rgba_and_float_conversion() -> None:
    gray = to_rgb_uint8(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert gray.shape == (3, 4, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    rgba = to_rgb_uint8(np.full((2, 2, 4), 9, np.uint8))
    assert rgba.shape == (2, 2, 3) and rgba.max() == 9
    single_channel = to_rgb_uint8(np.full((2, 2, 1), 3, np.uint8))
    assert single_channel.shape == (2, 2, 3)
    floats = to_rgb_uint8(np.array([[[0.0, 0.5, 1.0]]], np.float32))
    assert floats.dtype == np.uint8 and floats.tolist() == [[[0, 128, 255]]]
    sixteen = to_rgb_uint8(np.array([[0, 257 * 100, 65535]], np.uint16))
    assert sixteen[..., 0].tolist() == [[0, 100, 255]]
    ints = to_rgb_uint8(np.full((2, 2, 3), 200, np.int64))
    assert ints.dtype == np.uint8 and ints.max() == 200


def test_pil_modes_and_paths(tmp_path: Path) -> None:
    rgb = load_image(INPUT_IMAGE)
    assert rgb.shape == (480, 640, 3) and rgb.dtype == np.uint8
    for mode in ("L", "RGBA", "P", "I;16"):
        im = Image.new(mode, (6, 4))
        batch = normalize_images(im)
        assert batch.single and batch[0].shape == (4, 6, 3)
    path = tmp_path / "gray.png"
    Image.new("L", (3, 2), 77).save(path)
    assert normalize_images(path)[0].shape == (2, 3, 3)
    assert normalize_images(str(path))[0][0, 0, 1] == 77


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 2, 2, 2, 3), np.uint8), "rank 5"),
        (np.zeros((3,), np.uint8), "rank 1"),
        (np.zeros((4, 4, 5), np.uint8), "5 channels"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((0, 4, 4, 3), np.uint8), "empty batch"),
        (np.array([[[np.inf, 0, 0]]], np.float32), "NaN or infinite"),
        (np.full((2, 2, 3), 300.0), r"\[300, 300\]"),
        (np.full((2, 2, 3), 254.6, np.float32), r"float images must lie in \[0, 1\].*uint8"),
        (np.full((2, 2, 3), -0.5), r"float images must lie in \[0, 1\]"),
        (np.full((2, 2, 3), -1, np.int32), "0..255"),
        (np.zeros((2, 2, 3), bool), "dtype bool"),
        (np.array([["a"]]), "dtype"),
        (None, "None"),
        ([], "empty list"),
        (b"\x89PNG", "raw bytes"),
        ("missing.png", "does not exist"),
    ],
)
def test_bad_inputs(bad, message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalize_images(bad)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="cannot read image"):
        normalize_images([path])


def test_error_names_the_list_item() -> None:
    with pytest.raises(InputError, match="image 1"):
        normalize_images([np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 7), np.uint8)])


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    samples = np.array([[0, 257 * 64], [257 * 128, 65535]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(samples).save(path)
    read = load_image(path)
    assert read.dtype == np.uint8 and read.shape == (2, 2, 3)
    assert read[..., 0].tolist() == [[0, 64], [128, 255]]  # not all white


def test_float_images_are_in_zero_one() -> None:
    """Floats in [0, 1] are scaled by 255; floats outside are refused, never guessed."""
    half = normalize_images(np.full((4, 4, 3), 0.5, np.float32))[0]
    assert half.max() == 128 and half.min() == 128  # not black
    with pytest.raises(InputError, match=r"float images must lie in \[0, 1\]"):
        normalize_images(np.full((4, 4, 3), 128.0, np.float32))


def test_oversized_header_is_refused_before_decoding(tmp_path: Path) -> None:
    from tests.cli.test_inputs import png_claiming
    from zoo.images import MAX_IMAGE_PIXELS, check_image_file

    for side in (20000, 9000):  # beyond PIL's own limit, and beyond odzoo's
        bomb = tmp_path / f"bomb{side}.png"
        bomb.write_bytes(png_claiming(side, side))
        assert side * side > MAX_IMAGE_PIXELS
        with pytest.raises(InputError, match=f"bomb{side}.png.*pixels"):
            load_image(bomb)
        with pytest.raises(InputError, match="pixels"):
            check_image_file(bomb)
    assert check_image_file(INPUT_IMAGE) == (480, 640)


def test_folder_given_as_image_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder, not an image file; pass the image files inside it"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="is a folder"):
        normalize_images(tmp_path)
