"""Every bad input to ``odzoo`` ends in one line on stderr and exit status 2, before expensive work;
settings parse one way everywhere; a real run prints nothing but odzoo's own output."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import INPUT_IMAGE, ROOT
from zoo.cli import main
from zoo.datasets import make_shapes_dataset

#: A registry model that is not in the (empty, offline) test cache: loading it would fail with
#: "not in the cache", so an error about anything else proves the check ran before the load.
UNCACHED = "centernet_resnet50"


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    """Run the CLI, expect exit 2 and exactly one stderr line holding every fragment."""
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured
    err = captured.err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("odzoo"), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims ``width`` x ``height`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_dataset(tmp_path_factory.mktemp("inputs_shapes"), 3, seed=5, image_size=64)


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODZOO_OFFLINE", "1")


# ----------------------------------------------------------------------------- detect: images
def test_detect_refuses_a_decompression_bomb(tmp_path: Path, capsys, offline) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(20000, 20000))
    one_line_error(capsys, ["detect", str(bomb), "-m", UNCACHED], "bomb.png", "pixels")


def test_detect_checks_every_image_file_before_the_model_loads(tmp_path: Path, capsys, offline) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    one_line_error(capsys, ["detect", str(INPUT_IMAGE), str(tmp_path / "notes.png"), "-m", UNCACHED],
                   "cannot read image", "notes.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, ["detect", str(empty), "-m", UNCACHED], "has no image files")


# ----------------------------------------------------------------------------- detect: arguments
@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--max-detections", "-1"], ("--max-detections", "at least 1")),
        (["--max-detections", "0"], ("--max-detections", "at least 1")),
        (["--threshold", "nan"], ("--threshold", "finite")),
        (["--threshold", "1.5"], ("--threshold", "at most 1")),
        (["--threshold", "high"], ("--threshold", "'high'")),
    ],
)
def test_detect_number_arguments(extra: list[str], fragments: tuple[str, ...], capsys, offline) -> None:
    err = one_line_error(capsys, ["detect", str(INPUT_IMAGE), "-m", UNCACHED, *extra], *fragments)
    assert "odzoo detect --help" in err


def test_detect_output_is_checked_before_the_model_loads(tmp_path: Path, capsys, offline) -> None:
    base = ["detect", str(INPUT_IMAGE), "-m", UNCACHED]
    one_line_error(capsys, [*base, "-o", str(tmp_path)], "is a folder", "out.png")
    one_line_error(capsys, [*base, "-o", str(tmp_path / "drawn.xyz")], "'.xyz'", ".png")
    one_line_error(capsys, [*base, "-o", str(tmp_path / "drawn")], "no extension")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    one_line_error(capsys, [*base, "-o", str(blocker / "drawn.png")], "notes.txt is a file")
    one_line_error(capsys, [*base, "--out-dir", str(blocker)], "--out-dir", "is a file")
    one_line_error(capsys, [*base, "--out-dir", str(blocker / "sub")], "notes.txt is a file")
    second = tmp_path / "copy" / INPUT_IMAGE.name
    second.parent.mkdir()
    second.write_bytes(INPUT_IMAGE.read_bytes())
    one_line_error(capsys, ["detect", str(INPUT_IMAGE), str(second), "-m", UNCACHED, "--out-dir", str(tmp_path)],
                   "would both be drawn")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "notes.txt"]  # nothing written
    # with good arguments the run gets as far as loading, which the empty offline cache refuses
    one_line_error(capsys, [*base, "-o", str(tmp_path / "drawn.png")], "not in the cache")


def test_detect_suggests_close_model_names(capsys, offline) -> None:
    one_line_error(capsys, ["detect", str(INPUT_IMAGE), "-m", "efficentdet_d0"], "Did you mean: efficientdet_d0?")
    one_line_error(capsys, ["info", "efficentdet_d0"], "Did you mean: efficientdet_d0?")


def test_list_names_the_families_when_nothing_matches(capsys) -> None:
    assert main(["list", "--family", "yolo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no model matches (families: ") and "centernet" in out and "ssd" in out


def test_usage_errors_are_one_line(capsys) -> None:
    one_line_error(capsys, ["detect", str(INPUT_IMAGE)], "--model")
    one_line_error(capsys, ["list", "--kind", "toaster"], "--kind", "toaster")
    one_line_error(capsys, ["no-such-command"], "no-such-command")


# ----------------------------------------------------------------------------- eval
def _gt(shapes: Path) -> dict:
    return json.loads((shapes / "annotations.json").read_text())


def _good_result(gt: dict) -> dict:
    ann = gt["annotations"][0]
    return {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": 0.9}


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"bbox": [1, 2]}, ("results[1].bbox", "[1, 2]")),
        ({"bbox": [0, 0, -3, 4]}, ("results[1].bbox", "negative")),
        ({"score": "0.9"}, ("results[1].score", "'0.9'")),
        ({"score": True}, ("results[1].score",)),
        ({"image_id": 1.5}, ("results[1].image_id",)),
        ({"image_id": 999}, ("results[1].image_id 999", "not an image of the ground truth")),
        ({"category_id": "circle"}, ("results[1].category_id",)),
    ],
)
def test_eval_names_the_bad_result(change: dict, fragments: tuple[str, ...], shapes: Path, tmp_path: Path,
                                   capsys) -> None:
    gt = _gt(shapes)
    dets = [_good_result(gt), {**_good_result(gt), **change}]
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(dets))
    one_line_error(capsys, ["eval", "--annotations", str(shapes / "annotations.json"), "--detections", str(path)],
                   "dets.json", *fragments)


@pytest.mark.parametrize(
    "mutate, fragments",
    [
        (lambda gt: gt["images"][1].update(id="second"), ("images[1].id is a string", "images[0].id is an integer")),
        (lambda gt: gt["annotations"][0].update(bbox=[1, 2]), ("annotations[0].bbox", "[1, 2]")),
        (lambda gt: gt["annotations"][0].update(category_id="1"), ("annotations[0]", "category_id '1'")),
        (lambda gt: gt["images"].append(dict(gt["images"][0])), ("images[3].id", "used twice")),
        (lambda gt: gt["categories"][0].update(id=None), ("categories[0].id",)),
    ],
)
def test_eval_names_the_bad_ground_truth_record(mutate, fragments: tuple[str, ...], shapes: Path, tmp_path: Path,
                                               capsys) -> None:
    gt = _gt(shapes)
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([_good_result(gt)]))
    mutate(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    one_line_error(capsys, ["eval", "--annotations", str(path), "--detections", str(dets)], "gt.json", *fragments)


def test_eval_refuses_nan_in_json(shapes: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "dets.json"
    path.write_text('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": NaN}]')
    one_line_error(capsys, ["eval", "--annotations", str(shapes / "annotations.json"), "--detections", str(path)],
                   "NaN")
    one_line_error(capsys, ["eval", "--annotations", str(shapes), "--detections", str(path)], "is a folder")


# ----------------------------------------------------------------------------- finetune
def _finetune(shapes: Path, out: Path, *extra: str, model: str = "demo_shapes",
              annotations: Path | None = None) -> list[str]:
    return ["finetune", "--model", model, "--annotations", str(annotations or shapes / "annotations.json"),
            "--images", str(shapes / "images"), "--out", str(out), *extra]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--steps", "0"], ("--steps", "at least 1")),
        (["--steps", "-5"], ("--steps", "at least 1")),
        (["--epochs", "0"], ("--epochs", "greater than 0")),
        (["--epochs", "inf"], ("--epochs", "finite")),
        (["--steps", "2", "--learning-rate", "nan"], ("--learning-rate", "finite")),
        (["--steps", "2", "--learning-rate", "0"], ("--learning-rate", "greater than 0")),
        (["--steps", "2", "--batch-size", "0"], ("--batch-size", "at least 1")),
        (["--steps", "2", "--batch-size", "-8"], ("--batch-size", "at least 1")),
        (["--steps", "2", "--checkpoint-every", "0"], ("--checkpoint-every", "at least 1")),
        (["--steps", "2", "--input-size", "100"], ("--input-size", "multiple of 32")),
        (["--steps", "2", "--warmup-steps", "2"], ("--warmup-steps", "fewer than --steps")),
        (["--steps", "2", "--name", "../escape"], ("--name", "not a valid model name")),
        (["--steps", "2", "--num-classes", "0"], ("--num-classes", "at least 1")),
    ],
)
def test_finetune_arguments(extra: list[str], fragments: tuple[str, ...], shapes: Path, tmp_path: Path,
                            capsys, offline) -> None:
    out = tmp_path / "run"
    one_line_error(capsys, _finetune(shapes, out, *extra), *fragments)
    assert not out.exists()


def test_finetune_paths(shapes: Path, tmp_path: Path, capsys, offline) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    one_line_error(capsys, _finetune(shapes, taken, "--steps", "1"), "--out", "is a file")
    one_line_error(capsys, _finetune(shapes, tmp_path / "o", "--steps", "1", annotations=tmp_path / "none.json"),
                   "--annotations", "does not exist")
    one_line_error(capsys, ["finetune", "--model", "demo_shapes", "--annotations", str(shapes / "annotations.json"),
                            "--images", str(taken), "--out", str(tmp_path / "o"), "--steps", "1"],
                   "--images", "is a file")


@pytest.mark.parametrize("model, fragments", [
    ("extremenet", ("extremenet is a checkpoint", "not a detector")),
])
def test_finetune_names_models_it_cannot_train(model: str, fragments: tuple[str, ...], shapes: Path,
                                               tmp_path: Path, capsys, offline) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")  # the model is refused before the data is read
    one_line_error(capsys, _finetune(shapes, tmp_path / "o", "--steps", "1", model=model, annotations=broken),
                   *fragments)


def test_finetune_refuses_data_without_a_usable_box(shapes: Path, tmp_path: Path, capsys, offline) -> None:
    gt = _gt(shapes)
    for i, ann in enumerate(gt["annotations"]):
        ann["bbox"][2 + i % 2] = 0.0  # every box empty, in width or in height
    gt["annotations"][0]["iscrowd"] = 1
    path = tmp_path / "empty_boxes.json"
    path.write_text(json.dumps(gt))
    out = tmp_path / "run"
    one_line_error(capsys, _finetune(shapes, out, "--steps", "1", annotations=path),
                   "nothing to train on", f"{len(gt['annotations'])} annotations")
    assert not out.exists()


# ----------------------------------------------------------------------------- bench, demo
@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--max-detections", "-1"], ("--max-detections", "at least 1")),
        (["--score-threshold", "nan"], ("--score-threshold", "finite")),
        (["--batch", "0"], ("--batch", "at least 1")),
        (["--warmup", "-1"], ("--warmup", "at least 0")),
        (["--min-duration", "-2"], ("--min-duration", "at least 0")),
        (["--max-images", "0"], ("--max-images", "at least 1")),
        (["--tolerance", "nan"], ("--tolerance", "finite")),
        (["--backend", "torch"], ("--backend 'torch'", "keras, saved_model, hub")),
    ],
)
def test_bench_number_arguments(extra: list[str], fragments: tuple[str, ...], capsys) -> None:
    one_line_error(capsys, ["bench", UNCACHED, *extra], *fragments)


def test_bench_paths_are_checked_first(shapes: Path, tmp_path: Path, capsys, offline) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    one_line_error(capsys, ["bench", UNCACHED, "--out", str(taken)], "--out", "is a file")
    one_line_error(capsys, ["bench", UNCACHED, "--data", str(tmp_path / "nowhere")], "--data", "does not exist")
    one_line_error(capsys, ["bench", UNCACHED, "--annotations", str(shapes / "annotations.json"),
                            "--images", str(taken)], "--images", "is a file")
    one_line_error(capsys, ["bench", "--compare", str(tmp_path), str(taken)], "--compare", "is a folder")


def test_demo_arguments(tmp_path: Path, capsys) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("x")
    one_line_error(capsys, ["demo", "--images", "0"], "--images", "at least 1")
    one_line_error(capsys, ["demo", "--score-threshold", "-0.1"], "--score-threshold", "at least 0")
    one_line_error(capsys, ["demo", "--out", str(taken)], "--out", "is a file")
    one_line_error(capsys, ["demo", "--out", str(tmp_path / "demo"), "--image", str(tmp_path)], "is a folder")
    assert not (tmp_path / "demo").exists()


# ----------------------------------------------------------------------------- settings
def test_registry_variable_naming_a_binary_file_or_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    monkeypatch.setenv("ODZOO_REGISTRY", str(binary))
    one_line_error(capsys, ["list"], "model.bin", "not a text file", "ODZOO_REGISTRY")
    monkeypatch.setenv("ODZOO_REGISTRY", str(tmp_path))
    one_line_error(capsys, ["info", "demo_shapes"], "is a folder", "registry.yaml")


@pytest.mark.parametrize("name", ["ODZOO_OFFLINE", "ODZOO_QUIET", "ODZOO_KEEP_ARCHIVES"])
def test_boolean_variables_parse_one_way(name: str, monkeypatch, capsys) -> None:
    from zoo import settings
    from zoo.bench.run import quiet
    from zoo.errors import SettingsError
    from zoo.hub import config, progress

    readers = {"ODZOO_OFFLINE": config.offline, "ODZOO_KEEP_ARCHIVES": config.keep_archives, "ODZOO_QUIET": quiet}
    for text, expected in [("1", True), ("TRUE", True), (" yes ", True), ("on", True),
                           ("0", False), ("false", False), ("No", False), ("off", False), ("", False)]:
        monkeypatch.setenv(name, text)
        assert readers[name]() is expected, text
        assert settings.flag(name) is expected
        if name == "ODZOO_QUIET":
            assert progress.enabled(None) is (not expected and sys.stderr.isatty())
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(SettingsError, match=f"{name}='maybe' is not a boolean"):
        readers[name]()
    one_line_error(capsys, ["download", "demo_shapes"], f"{name}='maybe'", "1/true/yes/on")


def test_numeric_and_log_variables(monkeypatch, capsys) -> None:
    from zoo.errors import SettingsError
    from zoo.hub.config import NetSettings

    monkeypatch.setenv("ODZOO_TIMEOUT", "2.5")
    monkeypatch.setenv("ODZOO_RETRIES", "2")
    net = NetSettings.from_env()
    assert (net.read_timeout, net.attempts) == (2.5, 2)
    for name, value, message in [("ODZOO_TIMEOUT", "nan", "finite"), ("ODZOO_TIMEOUT", "-1", "positive"),
                                 ("ODZOO_RETRIES", "0", "at least 1"), ("ODZOO_RETRIES", "two", "whole number")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(SettingsError, match=message):
            NetSettings.from_env()
        monkeypatch.setenv(name, "3")
    monkeypatch.setenv("ODZOO_LOG", "chatty")
    one_line_error(capsys, ["list"], "ODZOO_LOG='chatty'", "debug, info, warning, error")


def test_help_lists_every_variable(capsys) -> None:
    from zoo.settings import VARIABLES

    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in VARIABLES) and "--verbose" in text


# ----------------------------------------------------------------------------- clean output
def _odzoo(args: list[str], env_extra: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ODZOO_", "TF_"))}
    env.update({"ODZOO_OFFLINE": "1", "ODZOO_CACHE": str(tmp_path / "cache"), **env_extra})
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    """A real ``odzoo detect`` on the embedded demo model, drawing to a file and printing JSON."""
    tmp_path = tmp_path_factory.mktemp("quiet_run")
    drawn = tmp_path / "drawn.png"
    done = _odzoo(["detect", str(INPUT_IMAGE), "-m", "demo_shapes", "-o", str(drawn), "--json"], {}, tmp_path)
    return done, tmp_path


def test_detect_prints_only_its_own_output(quiet_run) -> None:
    done, folder = quiet_run
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no TensorFlow/absl log lines, no dependency warnings
    payload = json.loads(done.stdout)
    assert payload[0]["image"] == str(INPUT_IMAGE) and payload[0]["annotated"] == str(folder / "drawn.png")
    assert np.asarray(Image.open(folder / "drawn.png")).shape == (480, 640, 3)
    assert sorted(p.name for p in folder.iterdir()) == ["cache", "drawn.png"]  # no partial files left


def test_verbose_shows_dependency_logs(quiet_run, tmp_path: Path) -> None:
    loud = _odzoo(["--verbose", "detect", str(INPUT_IMAGE), "-m", "demo_shapes", "--json"], {}, tmp_path)
    assert loud.returncode == 0, loud.stderr
    assert json.loads(loud.stdout)[0]["scores"] == json.loads(quiet_run[0].stdout)[0]["scores"]
    assert loud.stderr.strip(), "--verbose should let the dependencies' log lines through"
