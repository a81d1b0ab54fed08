"""The GPU path's options on a CPU: ``channels_last`` (same predictions within float tolerance),
``compile`` (torch.compile wired in after DDP, checkpoints without ``_orig_mod.``), and on CUDA
fused AdamW (cxrkit/training/setup.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxrkit.training.config import TrainConfig
from cxrkit.training.loop import train
from cxrkit.utils.params import ConfigError, from_dict


def _preds(out: Path) -> np.ndarray:
    return pd.read_csv(out / "pred_val_notta.csv").iloc[:, 1:].to_numpy()


def test_channels_last_on_cpu_is_opt_in_and_trains_to_the_same_predictions(tiny_cfg, tmp_path):
    plain = dataclasses.replace(tiny_cfg, epochs=1, channels_last=None, out=str(tmp_path / "plain"))  # the default
    last = dataclasses.replace(plain, channels_last=True, out=str(tmp_path / "last"))
    train(plain)
    train(last)
    weights = torch.load(tmp_path / "last" / "last.pt", weights_only=False)["model"]
    conv = next(v for k, v in weights.items() if v.ndim == 4 and v.shape[-1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last)  # it really trained channels-last
    plain_conv = torch.load(tmp_path / "plain" / "last.pt", weights_only=False)["model"]
    assert not next(v for v in plain_conv.values() if v.ndim == 4 and v.shape[-1] > 1).is_contiguous(
        memory_format=torch.channels_last)  # and the CPU default is NCHW
    np.testing.assert_allclose(_preds(tmp_path / "last"), _preds(tmp_path / "plain"), atol=1e-3)


@pytest.mark.parametrize("compile_", [False, True, "max-autotune"])
def test_compile_wraps_the_training_forward_and_checkpoints_stay_plain(tiny_cfg, tmp_path, monkeypatch, compile_):
    """torch.compile itself takes about a minute on a CPU for the tiny model (it is run on a GPU by
    ``make bench``); here a stand-in records the call and returns a module with compiled-style keys."""
    calls = []

    class Compiled(torch.nn.Module):  # what torch.compile returns: the module as ``_orig_mod``
        def __init__(self, module):
            super().__init__()
            self._orig_mod = module

        def forward(self, x):
            return self._orig_mod(x)

    def fake_compile(module, mode=None):
        calls.append(mode)
        return Compiled(module)

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = dataclasses.replace(tiny_cfg, epochs=1, compile=compile_)
    train(cfg)
    assert calls == ([] if compile_ is False else [compile_ if isinstance(compile_, str) else None])
    for name in ("best.pt", "last.pt"):
        keys = torch.load(Path(cfg.out) / name, weights_only=False)["model"].keys()
        assert not any(k.startswith("_orig_mod.") for k in keys) and "refiner.A" in keys


def test_compile_takes_a_bool_or_a_mode():
    assert from_dict(TrainConfig, {"compile": "reduce-overhead"}).compile == "reduce-overhead"
    with pytest.raises(ConfigError, match="compile: 'fast' is not true, false or a mode"):
        from_dict(TrainConfig, {"compile": "fast"})
    with pytest.raises(ConfigError, match="parameter 'channels_last' must be"):
        from_dict(TrainConfig, {"channels_last": "yes"})


def test_weights_of_a_compiled_module_load_as_pretrained(tmp_path):
    import timm

    from cxrkit.models import create_model

    src = timm.create_model("test_resnet", num_classes=14)
    torch.save({f"_orig_mod.{k}": v for k, v in src.state_dict().items()}, tmp_path / "compiled.pth")
    model = create_model("test_resnet", 14, pretrained=tmp_path / "compiled.pth")
    assert torch.equal(model.backbone.get_classifier().weight, src.get_classifier().weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fused AdamW, channels-last by default)")
def test_cuda_uses_fused_adamw_and_channels_last(tiny_cfg, monkeypatch):
    from cxrkit.training import setup

    seen = {}
    real = setup.set_up

    def spy(*args, **kwargs):
        run = real(*args, **kwargs)
        seen.update(fused=run.optimizer.defaults["fused"], channels_last=run.channels_last)
        return run

    monkeypatch.setattr("cxrkit.training.loop.set_up", spy)
    train(dataclasses.replace(tiny_cfg, epochs=1, device="cuda"))
    assert seen == {"fused": True, "channels_last": True}


def test_bench_times_the_paper_step_and_skips_without_cuda(capsys):
    """``make bench``'s GPU figure: the step runs (here on a CPU, tiny); without CUDA it says so."""
    from cxrkit.tools.bench_gpu import paper_config, paper_gpu_rows, train_rate

    paper = paper_config()
    assert (paper.backbone, paper.image_size, paper.channels_last, paper.compile) == ("seresnext101_32x4d", 380,
                                                                                      True, True)
    tiny = dataclasses.replace(paper, backbone="test_resnet", image_size=32, batch_size=4, amp="off")
    rate = train_rate(tiny, steps=1, warmup=1, compile_=False, device="cpu")
    assert rate["images_per_s"] > 0
    if not torch.cuda.is_available():
        rows = paper_gpu_rows(quick=True)
        assert rows[0]["setting"] == "skipped: no CUDA device" and "skipped" in capsys.readouterr().out
