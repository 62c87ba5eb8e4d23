"""The registry: every zoo archive, checked against the reference table, and strict validation."""
from __future__ import annotations

import csv
import json
import os
import textwrap

import pytest

import zoo
from zoo import pipeline_config, registry
from zoo.errors import RegistryError, UnknownModelError

from tests.conftest import CONFIGS, REFERENCE

ROWS = list(csv.DictReader(open(REFERENCE / "tf2_zoo.tsv", encoding="utf-8"), delimiter="\t"))


def _canonical(row: dict) -> str:
    base = row["tarball_basename"][: -len(".tar.gz")]
    if base == "extremenet":
        return "extremenet" if "/20210507/" in row["tarball_url"] else "extremenet_20200711"
    return base


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def test_registry_has_every_zoo_archive_once():
    names = {_canonical(r) for r in ROWS}
    zoo_specs = [s for s in zoo.list_models() if s.source == str(registry.PACKAGED_REGISTRY)
                 and s.url.startswith("http")]
    assert {s.name for s in zoo_specs} == names
    assert len(zoo_specs) == 43
    assert sum(s.kind == "detector" for s in zoo_specs) == 41
    assert {s.name for s in zoo_specs if s.kind == "checkpoint"} == {"extremenet", "extremenet_20200711"}


@pytest.mark.parametrize("row", ROWS, ids=_canonical)
def test_entry_matches_reference_table(row):
    spec = zoo.info(_canonical(row))
    assert spec.url == row["tarball_url"].replace("http://", "https://", 1)  # the host serves https
    assert spec.display_name == row["display_name"]
    assert spec.archive_top == row["archive_top_dir"].split(" (")[0]
    if spec.kind == "checkpoint":
        assert spec.published.box_map is None and spec.input is None
        return
    assert spec.published.speed_ms == _number(row["speed_ms"])
    assert spec.published.map_as_listed == row["coco_map_as_listed"]
    if spec.name != "centernet_mobilenetv2fpn_512x512_coco17_kpts":  # the zoo leaves its one figure unlabelled
        assert spec.published.box_map == _number(row["box_map"])
    assert "/".join(o.capitalize() for o in spec.outputs) == row["outputs"]
    handle = row["tfhub_handle"].strip()
    assert spec.tfhub == (handle if handle.startswith("http") else None)
    if row["second_map_kind"] == "keypoint_mAP":
        assert spec.published.keypoint_map == _number(row["second_map"])
    if row["second_map_kind"] == "mask_mAP":
        assert spec.published.mask_map == _number(row["second_map"])


@pytest.mark.parametrize("spec", [s for s in zoo.list_models(kind="detector") if (CONFIGS / s.name).is_dir()],
                         ids=lambda s: s.name)
def test_entry_matches_its_pipeline_config(spec):
    arch, model = pipeline_config.model_config(pipeline_config.load(CONFIGS / spec.name / "pipeline.config"))
    assert spec.meta_architecture == arch
    assert spec.feature_extractor == model.get("feature_extractor.type")
    assert spec.num_classes == model["num_classes"]
    assert len(spec.label_map) == (80 if spec.num_classes == 90 else spec.num_classes)
    kind, resizer = model["image_resizer"].oneof()
    if kind == "fixed_shape_resizer":
        assert (spec.input.resizer, spec.input.height, spec.input.width) == (
            "fixed_shape", resizer["height"], resizer["width"])
    else:
        assert (spec.input.min_dimension, spec.input.max_dimension) == (
            resizer["min_dimension"], resizer["max_dimension"])


def test_aliases_resolve_to_the_canonical_spec():
    assert zoo.info("centernet_resnet50").name == "centernet_resnet50_v1_fpn_512x512_coco17_tpu-8"
    assert zoo.info("efficientdet_d0").name == "efficientdet_d0_coco17_tpu-32"
    assert zoo.info("ssd_mobilenet_v2_fpnlite_320").name == "ssd_mobilenet_v2_fpnlite_320x320_coco17_tpu-8"
    assert zoo.info("faster_rcnn_resnet50_640").name == "faster_rcnn_resnet50_v1_640x640_coco17_tpu-8"
    every = [k for s in zoo.list_models() for k in (s.name, *s.aliases)]
    assert len(every) == len(set(every))


def test_embedded_demo_model_is_packaged_and_pinned():
    import hashlib
    from urllib.parse import urlparse

    spec = zoo.info("demo")
    assert spec.name == "demo_shapes" and spec.url.startswith("file://")
    archive = urlparse(spec.url).path
    data = open(archive, "rb").read()
    assert len(data) == spec.size_bytes < 10 * 2**20
    assert hashlib.sha256(data).hexdigest() == spec.sha256
    assert dict(spec.label_map) == {1: "circle", 2: "square", 3: "triangle"}


def test_every_embedded_model_is_packaged_pinned_and_small():
    import hashlib
    from urllib.parse import urlparse

    embedded = [s for s in zoo.list_models() if s.source == str(registry.PACKAGED_REGISTRY)
                and s.url.startswith("file://")]
    assert {s.name for s in embedded} == {"demo_shapes", "demo_ssd_shapes"}
    assert {s.meta_architecture for s in embedded} == {"center_net", "ssd"}
    for spec in embedded:
        data = open(urlparse(spec.url).path, "rb").read()
        assert len(data) == spec.size_bytes < 10 * 2**20, spec.name
        assert hashlib.sha256(data).hexdigest() == spec.sha256, spec.name
        assert dict(spec.label_map) == {1: "circle", 2: "square", 3: "triangle"}, spec.name


def test_specs_are_immutable():
    spec = zoo.info("efficientdet_d3")
    with pytest.raises(AttributeError):
        spec.url = "http://elsewhere/x.tar.gz"  # type: ignore[misc]


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownModelError, match="centernet_resnet50") as err:
        zoo.info("centernet_resnet5")
    assert "odzoo list" in str(err.value)


@pytest.mark.parametrize("call", [zoo.info, zoo.load, zoo.download])
def test_typos_suggest_the_intended_model(call, monkeypatch):
    monkeypatch.setenv("ODZOO_OFFLINE", "1")
    for typo, meant in [("efficentdet_d0", "efficientdet_d0"), ("centrenet_resnet50", "centernet_resnet50"),
                        ("demo_shape", "demo_shapes")]:
        with pytest.raises(UnknownModelError, match=rf"Did you mean: {meant}\?") as err:
            call(typo)
        assert str(err.value).count("\n") == 0
    with pytest.raises(UnknownModelError) as err:
        zoo.info("zzzz")
    assert "Did you mean" not in str(err.value)


def test_binary_or_folder_registry_file(tmp_path, monkeypatch):
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)))
    monkeypatch.setenv("ODZOO_REGISTRY", str(binary))
    with pytest.raises(RegistryError, match="weights.bin: not a text file"):
        zoo.list_models()
    monkeypatch.setenv("ODZOO_REGISTRY", str(tmp_path))
    with pytest.raises(RegistryError, match="is a folder, not a registry file"):
        zoo.list_models()
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - name: x\n")
    monkeypatch.setenv("ODZOO_REGISTRY", str(bad))
    with pytest.raises(RegistryError, match=r"not valid YAML: .* at line \d+, column \d+") as err:
        zoo.list_models()
    assert "\n" not in str(err.value)


def test_list_models_patterns_and_filters():
    assert len(zoo.list_models("efficientdet_d*")) == 8
    kpts = zoo.list_models(outputs="keypoints")
    assert len(kpts) == 5 and all(s.family == "centernet" for s in kpts)
    assert [s.name for s in zoo.list_models(outputs="masks")] == ["mask_rcnn_inception_resnet_v2_1024x1024_coco17_gpu-8"]
    assert len([s for s in zoo.list_models(architecture="center_net") if s.url.startswith("http")]) == 11
    assert len(zoo.list_models("retinanet_*")) == 6
    with pytest.raises(TypeError, match="unknown filter"):
        zoo.list_models(colour="red")


# ----------------------------------------------------------------------------- validation
GOOD_ENTRY = """
  - name: my_duck_detector
    display_name: "Rubber ducks"
    aliases: [ducks]
    kind: detector
    family: centernet
    meta_architecture: center_net
    feature_extractor: resnet_v1_50_fpn
    input: {resizer: keep_aspect_ratio, min_dimension: 512, max_dimension: 512, pad_to_max_dimension: true}
    outputs: [boxes]
    num_classes: 1
    max_detections: 100
    label_map: {1: duck}
    url: models/ducks.tar.gz
    archive_top: ducks
    sha256: null
"""


def _write(tmp_path, body: str, name: str = "private.yaml"):
    path = tmp_path / name
    path.write_text("models:" + textwrap.dedent(body) if not body.startswith("schema") else body)
    return path


def test_private_registry_adds_models(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD_ENTRY)
    monkeypatch.setenv("ODZOO_REGISTRY", str(path))
    spec = zoo.info("ducks")
    assert spec.name == "my_duck_detector"
    assert spec.label_map == {1: "duck"}
    assert spec.url == (tmp_path / "models" / "ducks.tar.gz").resolve().as_uri()
    assert spec.source == str(path)
    monkeypatch.delenv("ODZOO_REGISTRY")
    with pytest.raises(UnknownModelError):
        zoo.info("ducks")


def test_several_private_registries(tmp_path, monkeypatch):
    one = _write(tmp_path, GOOD_ENTRY, "one.yaml")
    two = _write(tmp_path, GOOD_ENTRY.replace("my_duck_detector", "geese").replace("[ducks]", "[goose]"), "two.yaml")
    monkeypatch.setenv("ODZOO_REGISTRY", os.pathsep.join([str(one), str(two)]))
    assert zoo.info("goose").source == str(two)
    assert zoo.info("ducks").source == str(one)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (("num_classes: 1", "num_clases: 1"), "num_clases", "unknown field"),
        (("    sha256: null\n", ""), "sha256", "missing"),
        (("sha256: null", "sha256: abc123"), "sha256", "64 lowercase hex"),
        (("url: models/ducks.tar.gz", "url: ftp://host/ducks.tar.gz"), "url", "unsupported scheme"),
        (("url: models/ducks.tar.gz", "url: http:///ducks.tar.gz"), "url", "malformed URL"),
        (("kind: detector", "kind: detektor"), "kind", "must be one of"),
        (("outputs: [boxes]", "outputs: [boxes, poses]"), "outputs", "poses"),
        (("num_classes: 1", "num_classes: -3"), "num_classes", "positive"),
        (("resizer: keep_aspect_ratio,", "resizer: stretch,"), "input.resizer", "must be one of"),
        (("label_map: {1: duck}", "label_map: {one: duck}"), "label_map", "integers"),
    ],
)
def test_bad_entries_name_file_entry_and_field(tmp_path, monkeypatch, change, field, message):
    path = _write(tmp_path, GOOD_ENTRY.replace(*change))
    monkeypatch.setenv("ODZOO_REGISTRY", str(path))
    with pytest.raises(RegistryError) as err:
        zoo.list_models()
    text = str(err.value)
    assert str(path) in text and "my_duck_detector" in text and repr(field) in text and message in text


def test_duplicate_name_or_alias_is_rejected(tmp_path, monkeypatch):
    clash = GOOD_ENTRY.replace("aliases: [ducks]", "aliases: [centernet_resnet50]")
    monkeypatch.setenv("ODZOO_REGISTRY", str(_write(tmp_path, clash)))
    with pytest.raises(RegistryError, match="'centernet_resnet50' is already used by"):
        zoo.list_models()
    twice = GOOD_ENTRY + GOOD_ENTRY.replace("[ducks]", "[ducks2]")
    monkeypatch.setenv("ODZOO_REGISTRY", str(_write(tmp_path, twice, "twice.yaml")))
    with pytest.raises(RegistryError, match="'my_duck_detector' is already used"):
        zoo.list_models()


def test_unreadable_or_malformed_registry_files(tmp_path, monkeypatch):
    monkeypatch.setenv("ODZOO_REGISTRY", str(tmp_path / "missing.yaml"))
    with pytest.raises(RegistryError, match="missing.yaml: cannot read"):
        zoo.list_models()
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - name: x\n")
    monkeypatch.setenv("ODZOO_REGISTRY", str(bad))
    with pytest.raises(RegistryError, match="not valid YAML"):
        zoo.list_models()
    bad.write_text("!!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(RegistryError):
        zoo.list_models()


def test_registry_file_changes_are_picked_up(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD_ENTRY)
    monkeypatch.setenv("ODZOO_REGISTRY", str(path))
    assert zoo.info("ducks").display_name == "Rubber ducks"
    path.write_text("models:" + textwrap.dedent(GOOD_ENTRY.replace("Rubber ducks", "Yellow ducks")))
    os.utime(path, (1, 1))  # a different mtime, even on coarse clocks
    assert zoo.info("ducks").display_name == "Yellow ducks"


# ----------------------------------------------------------------------------- CLI
def test_cli_list_and_info(capsys):
    from zoo.cli import main

    assert main(["list", "centernet*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 11 and all(r["family"] == "centernet" for r in rows)
    assert main(["info", "efficientdet_d6"]) == 0
    out = capsys.readouterr().out
    assert "1408" in out and "50.5" in out
    assert main(["info", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'no_such_model'" in err
