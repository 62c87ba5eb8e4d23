"""pipeline.config (protobuf text format) is read without the OD API protos."""
from __future__ import annotations

import pytest

from zoo import pipeline_config
from zoo.errors import ConfigError

from tests.conftest import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/pipeline.config")), ids=lambda p: p.parent.name)
def test_every_zoo_config_parses(path):
    cfg = pipeline_config.load(path)
    arch, model = pipeline_config.model_config(cfg)
    assert arch in ("center_net", "ssd", "faster_rcnn")
    assert model["num_classes"] in (1, 90)
    assert "train_config" in cfg and "eval_config" in cfg


def test_values_types_and_repeated_fields():
    cfg = pipeline_config.parse(
        """
        # comment
        model { ssd { num_classes: 90 score: 1e-8 flag: true name: "a\\"b" 'c'
          converter: SIGMOID  ratios: [1.0, 2.0, 0.5] neg: -3 } }
        opt { step: 1 } opt { step: 2 }
        """
    )
    ssd = cfg.get("model.ssd")
    assert ssd["num_classes"] == 90 and isinstance(ssd["num_classes"], int)
    assert ssd["score"] == pytest.approx(1e-8)
    assert ssd["flag"] is True
    assert ssd["name"] == 'a"bc'
    assert ssd["converter"] == "SIGMOID" and isinstance(ssd["converter"], pipeline_config.Enum)
    assert ssd.all("ratios") == [1.0, 2.0, 0.5]
    assert ssd["neg"] == -3
    assert [m["step"] for m in cfg.all("opt")] == [1, 2]
    assert cfg.get("model.ssd.missing", "dflt") == "dflt"


@pytest.mark.parametrize(
    ("text", "message"),
    [("model { ssd { num_classes: 90 }", "missing '}'"), ("model { : 3 }", ":1: expected a field name"),
     ("a: \n", "has no value"), ("a: @", "cannot read")],
)
def test_errors_name_the_line(text, message):
    with pytest.raises(ConfigError, match=message):
        pipeline_config.parse(text, "x.config")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read pipeline config"):
        pipeline_config.load(tmp_path / "nope.config")
