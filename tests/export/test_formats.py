"""``zoo.export`` / ``odzoo export`` on the two stand-in archives: SavedModel (zoo layout) and TFLite
round trips at parity with the Keras model on the reference image, quantized exports that report
their agreement, and bad arguments refused in one line before any work, leaving nothing behind."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import zoo
from tests.conftest import FIXTURES, INPUT_IMAGE
from zoo.errors import ArgumentError, UnsupportedModelError
from zoo.exporting import measure_agreement
from zoo.exporting.output_folder import staged_folder
from zoo.loading import load

pytestmark = pytest.mark.slow

TARBALLS = FIXTURES / "tarballs"
SSD = "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
CENTERNET = "centernet_mobilenetv2fpn_512x512_coco17_od"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.asarray(Image.open(INPUT_IMAGE).convert("RGB"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("export_cache")
    return {name: load(str(TARBALLS / f"{name}.tar.gz"), cache_dir=cache) for name in (SSD, CENTERNET)}


def _only(parent: Path, name: str) -> None:
    """Nothing but the finished folder was written (no temporary folder left beside it)."""
    assert sorted(p.name for p in parent.iterdir()) == [name]


def _same_labels(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a.labels == b.labels and len(a) > 0


@pytest.mark.parametrize("name", [SSD, CENTERNET])
def test_saved_model_export_round_trips_at_parity(name: str, models: dict, image: np.ndarray, tmp_path: Path) -> None:
    det = models[name]
    result = zoo.export(det, "saved_model", out=tmp_path / "exported")
    folder = result.folder
    _only(tmp_path, "exported")
    for part in ("checkpoint/ckpt-0.index", "saved_model/saved_model.pb", "pipeline.config", "label_map.pbtxt"):
        assert (folder / part).is_file(), part
    again = load(folder, strict=True)
    assert again.restore_report.ok and len(again.restore_report.matched) == len(det.net.checkpoint_map())
    served = load(folder, backend="saved_model")
    for other in (again, served):
        agreement = measure_agreement(det, other, [image])
        assert agreement["parity"], agreement
        assert agreement["compared"] > 0
        _same_labels(det.detect(image, score_threshold=0.3), other.detect(image, score_threshold=0.3))


@pytest.mark.parametrize("name", [SSD, CENTERNET])
def test_tflite_export_runs_behind_detect_at_parity(name: str, models: dict, image: np.ndarray, tmp_path: Path) -> None:
    det = models[name]
    result = zoo.export(det, "tflite", out=tmp_path / "lite")
    _only(tmp_path, "lite")
    assert {"model.tflite", "pipeline.config", "label_map.pbtxt", "export.json"} <= set(result.files)
    lite = load(result.folder, backend="tflite")
    assert lite.backend == "tflite"
    agreement = measure_agreement(det, lite, [image])
    assert agreement["parity"], agreement
    assert agreement["matched"] == 1.0 and agreement["max_box_px"] <= 1.0 and agreement["max_score_rel"] <= 1e-3
    found = lite.detect(image, score_threshold=0.3)
    _same_labels(det.detect(image, score_threshold=0.3), found)
    # a list of images of different sizes: one Detections each, in each image's own pixels
    small = image[:240, :400]
    results = lite.detect([image, small])
    assert len(results) == 2 and results[1].image_size == (240, 400)
    assert measure_agreement(det, lite, [small])["parity"]


@pytest.mark.parametrize(("name", "quantize"), [(CENTERNET, "float16"), (CENTERNET, "int8")])
def test_quantized_tflite_reports_agreement(name: str, quantize: str, models: dict, image: np.ndarray,
                                            tmp_path: Path) -> None:
    calibration = None
    if quantize == "int8":
        calibration = tmp_path / "calibration"
        calibration.mkdir()
        shutil.copy(INPUT_IMAGE, calibration / "a.png")
        Image.fromarray(image[::-1]).save(calibration / "b.png")
    result = zoo.export(models[name], "tflite", quantize=quantize, calibration=calibration, out=tmp_path / "q")
    assert result.quantize == quantize
    lite = load(result.folder, backend="tflite")
    agreement = measure_agreement(models[name], lite, [image])
    assert agreement["compared"] > 0 and 0.0 < agreement["matched"] <= 1.0  # quantized, yet still detecting
    if agreement["mean_iou"] is not None:
        assert 0.0 < agreement["mean_iou"] <= 1.0 and agreement["max_box_px"] >= 0.0
    assert (result.folder / "model.tflite").is_file()


# ----------------------------------------------------------------------------- bad input, one line, exit 2
def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from zoo.cli import main

    capsys.readouterr()
    rc = main(["export", *argv])
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "tflite", "--quantize", "int8"], "needs calibration images"),
        (["--format", "saved_model", "--quantize", "float16"], "applies to TFLite only"),
        (["--format", "tflite", "--calibration", "."], "only used by int8"),
    ],
)
def test_bad_options_are_refused_before_loading(extra: list[str], message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # the model name is unknown: the options must be refused before it is even looked up
    rc, err = _cli(["no_such_model", *extra, "-o", str(tmp_path / "out")], capsys)
    assert rc == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_output_path_problems_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    for out, message in ((a_file, "is a file; give a folder"), (busy, "is a folder that is not empty"),
                         (a_file / "sub", f"{a_file} is a file, so the folder cannot be created")):
        rc, err = _cli([CENTERNET, "--format", "saved_model", "-o", str(out)], capsys)
        assert rc == 2 and f"-o {out}: {message}" in err and len(err.splitlines()) == 1, err
        with pytest.raises(ArgumentError, match="^out "):
            zoo.export(CENTERNET, "saved_model", out=out)
    assert a_file.read_text() == "x" and (busy / "keep.txt").read_text() == "mine"
    calibration = tmp_path / "empty_calibration"
    calibration.mkdir()
    rc, err = _cli([CENTERNET, "--format", "tflite", "-q", "int8", "--calibration", str(calibration), "-o",
                    str(tmp_path / "new")], capsys)
    assert rc == 2 and "holds no images" in err


def test_format_a_model_cannot_take_is_refused_before_download(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8"
    rc, err = _cli([name, "--format", "tflite", "-o", str(tmp_path / "out"), "--offline"], capsys)
    assert rc == 2 and len(err.splitlines()) == 1
    assert name in err and "cannot be exported to TFLite" in err and "saved_model" in err
    with pytest.raises(UnsupportedModelError, match="two-stage"):
        zoo.export(name, "tflite", out=tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_resizer_without_fixed_size_cannot_go_to_tflite(tmp_path: Path) -> None:
    from tests.train.test_loop import TINY_CONFIG, register_tiny
    from zoo.exporting.tflite_graphs import check_tflite_support
    from zoo.models.builder import build_model
    from zoo.pipeline_config import parse

    register_tiny()
    assert "pad_to_max_dimension: true" in TINY_CONFIG
    net = build_model(parse(TINY_CONFIG.replace("pad_to_max_dimension: true", "pad_to_max_dimension: false")))
    with pytest.raises(UnsupportedModelError, match="tiny cannot be exported to TFLite: .*input size is not fixed"):
        check_tflite_support(net, "tiny")


def test_staged_folder_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError), staged_folder(target) as stage:
        (stage / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("conversion failed")
    assert list(tmp_path.iterdir()) == []  # the temporary folder and the parents it created are gone
    with pytest.raises(KeyboardInterrupt), staged_folder(tmp_path / "out") as stage:
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_folder(empty) as stage:
        (stage / "done.txt").write_text("ok")
    assert (empty / "done.txt").read_text() == "ok" and sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    with pytest.raises(ArgumentError, match="not empty"), staged_folder(empty):
        pass


# ----------------------------------------------------------------------------- the SSD TFLite NMS
def _nms_case(seed: int, crowded: bool):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    n, classes = 400, 3
    corner = rng.uniform(0, 0.8, (n, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.02, 0.2, (n, 2))], 1)
    scores = rng.uniform(0.0, 1.0, (n, classes)) ** 4
    if crowded:  # 300 near-copies of one box hold every class's best scores: the rest lies beyond them
        boxes[:300] = np.array([0.2, 0.2, 0.6, 0.6]) + rng.normal(0, 0.005, (300, 4))
        scores[:300] = rng.uniform(0.9, 1.0, (300, classes))
        scores[300:] *= 0.5
    return boxes.astype(np.float32), scores.astype(np.float32)


@pytest.mark.parametrize("crowded", [False, True])
@pytest.mark.parametrize(("path", "fallback", "from_logits"), [
    ("_fast_nms_or_full", "_per_class_nms", False),
    ("_pair_nms_or_per_class", "_fast_nms_or_full", False),
    ("_pair_nms_or_per_class", "_fast_nms_or_full", True),
])
def test_tflite_ssd_nms_gives_the_keras_nms_detections(path: str, fallback: str, from_logits: bool, crowded: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The NMS of the TFLite graph (on each class's best candidates, or on the best (box, class)
    pairs of all classes ranked by score or by logit, each with its fallback when that could miss a
    detection) selects exactly what the Keras model's NMS selects."""
    import functools

    import tensorflow as tf

    from zoo.exporting import tflite_graphs
    from zoo.models.nms import NmsConfig, multiclass_nms

    config = NmsConfig(score_thresh=1e-8, iou_thresh=0.5, max_size_per_class=20, max_total_size=30,
                       change_coordinate_frame=False)
    boxes, scores = _nms_case(7, crowded)
    kwargs = {}
    if from_logits:  # the graph ranks by logit and converts only the candidates with the sigmoid
        logits = np.log(np.clip(scores, 1e-6, 1 - 1e-6) / (1 - np.clip(scores, 1e-6, 1 - 1e-6))).astype(np.float32)
        scores, kwargs = tf.sigmoid(logits).numpy(), {"to_scores": tf.sigmoid}
    window = tf.constant([0.0, 0.0, 1.0, 1.0])
    fallback_calls = []
    exact = getattr(tflite_graphs, fallback)
    monkeypatch.setattr(tflite_graphs, fallback, lambda *a: fallback_calls.append(1) or exact(*a))
    detections = functools.partial(tflite_graphs._detections, window=window, config=config)
    ranking = logits if from_logits else scores
    out, num = getattr(tflite_graphs, path)(tf.constant(boxes), tf.constant(ranking), config, detections, **kwargs)
    assert len(fallback_calls) == (1 if crowded else 0)  # the fallback runs exactly when it is needed
    expected, expected_num = multiclass_nms(boxes, scores, config, window)
    assert int(num) == int(expected_num) == config.max_total_size  # both cases fill the output
    np.testing.assert_array_equal(out["classes"][: int(num)].numpy(), expected["classes"].numpy())
    np.testing.assert_array_equal(out["scores"][: int(num)].numpy(), expected["scores"].numpy())
    np.testing.assert_array_equal(out["boxes"][: int(num)].numpy(), expected["boxes"].numpy())
