from __future__ import annotations

import pytest

from cxrkit.cli import _config_from_args, build_parser
from cxrkit.config import ConfigError, TrainConfig, from_dict, load_yaml


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown parameter 'imgae_size'.*'image_size'"):
        from_dict(TrainConfig, {"imgae_size": 128}, source="p.yaml")


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"p.yaml: parameter 'epochs' must be int, got '3'"):
        from_dict(TrainConfig, {"epochs": "3"}, source="p.yaml")
    with pytest.raises(ConfigError, match="'tta' must be bool"):
        from_dict(TrainConfig, {"tta": 1})


def test_ints_accepted_for_floats_and_none_for_optional():
    cfg = from_dict(TrainConfig, {"lr": 1, "pretrained": None, "labels": ["Edema"]})
    assert cfg.lr == 1 and cfg.pretrained is None and cfg.labels == ["Edema"]


@pytest.mark.parametrize("key,value,msg", [
    ("amp", "fp8", "amp"), ("epochs", 0, "epochs"), ("ema_decay", 1.0, "ema_decay"),
    ("rrc_scale", [0.9, 0.5], "rrc_scale"), ("fold", -1, "fold"), ("on_bad_image", "skip", "on_bad_image"),
])
def test_value_ranges(key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(TrainConfig, {key: value})


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(lst)


def test_cli_options_mirror_parameters_and_override_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epochs: 5\nrefiner: none\nbatch_size: 8\n")
    args = build_parser().parse_args(["train", "--config", str(f), "--refiner", "sparse", "--fold", "2",
                                      "--no-tta", "--rrc-scale", "[0.9, 1.0]"])
    cfg = _config_from_args(TrainConfig, args)
    assert (cfg.epochs, cfg.refiner, cfg.batch_size, cfg.fold, cfg.tta) == (5, "sparse", 8, 2, False)
    assert cfg.rrc_scale == [0.9, 1.0]


def test_cli_rejects_unknown_key_in_file(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("epoch: 5\n")
    args = build_parser().parse_args(["train", "--config", str(f)])
    with pytest.raises(ConfigError, match=r"p.yaml: unknown parameter 'epoch'"):
        _config_from_args(TrainConfig, args)
