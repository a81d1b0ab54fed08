from __future__ import annotations

import pytest

from cxrkit.cli import _config_from_args, build_parser
from cxrkit.training.config import TrainConfig
from cxrkit.utils.params import ConfigError, from_dict, load_yaml


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


@pytest.mark.parametrize("values,msg", [
    ({"loss_reduction": "median"}, "loss_reduction"), ({"loss": "bce", "focal_grad": True}, "focal_grad"),
    ({"gcn_form": "ml_gcn"}, "gcn_form"),
])
def test_reduction_focal_grad_and_gcn_form_are_checked(values, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(TrainConfig, values)


def test_defaults_keep_the_kits_behaviour():
    cfg = TrainConfig()
    assert (cfg.loss_reduction, cfg.focal_grad, cfg.gcn_form, cfg.gcn_normalize) == ("sum", None, "row", "row")
    assert (cfg.ema_refiner, cfg.ema_warmup, cfg.weight_decay_all, cfg.seed) == (True, True, False, 0)
    with pytest.raises(ConfigError, match="'ema_refiner' must be bool"):
        from_dict(TrainConfig, {"ema_refiner": "no"})


def test_parameter_files_carry_the_authors_semantics():
    """paper.yaml: the reduction, focusing gradient, EMA, weight decay and seeds of Srivastava et al.'s
    code; rawlekar.yaml: the official GCN form by default; lambda_sweep.yaml: every lambda under
    both reductions."""
    from cxrkit.study import load_study
    from cxrkit.utils.paths import project_root

    params = project_root() / "params"
    paper = load_study(params / "paper.yaml").validate()
    for v in paper.variant_names:
        t = paper.train_config(0, v)
        assert (t.loss, t.loss_reduction, t.focal_grad, t.grad_clip, t.l1_lambda) == ("asl", "mean", True, 1.0, 1e-3)
        assert (t.ema_decay, t.ema_refiner, t.ema_warmup, t.weight_decay_all, t.seed) == (0.999, False, False, True, 42)
    assert (paper.split_seed, paper.group) == (42, "patient")
    raw = load_study(params / "rawlekar.yaml").validate()
    gcn = raw.train_config(0, "cooc_gcn")
    assert (gcn.gcn_form, gcn.gcn_hidden, gcn.gcn_layers, gcn.gcn_p) == ("official", 10, 3, 0.2)
    assert raw.train_config(0, "cooc_gcn_rasl").gcn_form == "official"
    assert raw.train_config(0, "cooc_gcn_row").gcn_form == "row"
    sweep = load_study(params / "lambda_sweep.yaml").validate()
    grid = {(t.loss_reduction, t.l1_lambda) for t in (sweep.train_config(0, v) for v in sweep.variant_names)
            if t.refiner == "sparse"}
    assert grid == {(r, lam) for r in ("sum", "mean") for lam in (0.0, 1e-4, 1e-3, 1e-2)}
