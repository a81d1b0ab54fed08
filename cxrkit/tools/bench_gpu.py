"""``make bench`` on a GPU: training images/s of the paper's configuration (``params/paper.yaml``:
SE-ResNeXt101 32x4d at 380 px, its batch, AMP, channels-last, fused AdamW and, as it sets,
``torch.compile``) on random tensors, a training step as :mod:`cxrkit.training.epoch` takes it
(autocast forward, loss in float32, scaled backward, clipping, optimiser and scaler steps). The
input pipeline is not part of it (``make bench`` times it apart). Skipped without CUDA.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from cxrkit.losses import create_loss
from cxrkit.models import create_model
from cxrkit.training.config import TrainConfig, loss_kwargs, refiner_kwargs
from cxrkit.training.optim import param_groups
from cxrkit.utils.params import from_dict, load_yaml

PAPER = "params/paper.yaml"
LABELS = 14


def paper_config(params: str = PAPER) -> TrainConfig:
    """The ``train:`` block of the paper's study file as a :class:`TrainConfig`."""
    return from_dict(TrainConfig, load_yaml(params)["train"], source=f"{params} (train)")


def train_rate(cfg: TrainConfig, steps: int = 20, warmup: int = 5, compile_: bool | str | None = None,
               device: str = "cuda") -> dict[str, float]:
    """Training images/s of ``cfg``'s model on random ``(batch, 3, size, size)`` batches.

    Args:
        cfg: The parameters (backbone, image_size, batch_size, amp, loss, refiner, channels_last).
        steps: Timed steps, after ``warmup`` untimed ones (which include the compilation).
        compile_: ``torch.compile`` (True or a mode) or not; None: ``cfg.compile``.
        device: A CUDA device (``cpu`` runs the same steps, for tests: no fused AdamW there).

    Returns:
        ``images_per_s``, ``step_s`` and ``warmup_s`` (the first steps, compilation included).
    """
    from cxrkit.utils.amp import autocast_context, resolve_amp

    dev = torch.device(device)
    compile_ = cfg.compile if compile_ is None else compile_
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = create_model(cfg.backbone, LABELS, refiner=cfg.refiner, drop_rate=cfg.drop_rate,
                         refiner_kwargs=refiner_kwargs(cfg)).to(dev)
    if cfg.channels_last is not False:
        model.to(memory_format=torch.channels_last)
    y = (torch.rand(cfg.batch_size, LABELS, device=dev) < 0.3).float()
    loss_fn = create_loss(cfg.loss, train_labels=y.cpu().numpy(), reduction=cfg.loss_reduction,
                          **loss_kwargs(cfg)).to(dev)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.weight_decay_all), lr=cfg.lr,
                            fused=dev.type == "cuda" or None)
    scaler = torch.amp.GradScaler(dev.type, enabled=resolve_amp(dev, cfg.amp) == torch.float16)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda _: None)
    net = torch.compile(model, mode=compile_ if isinstance(compile_, str) else None) if compile_ else model
    x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=dev).contiguous(
        memory_format=torch.channels_last)
    mask = torch.ones_like(y)

    def step() -> None:
        with autocast_context(dev, cfg.amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y, mask) + model.penalty()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        scaler.update()

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(dev)
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(dev)
    t_step = (time.perf_counter() - t1) / steps
    return {"images_per_s": cfg.batch_size / t_step, "step_s": t_step, "warmup_s": t1 - t0}


def paper_gpu_rows(quick: bool = False) -> list[dict[str, Any]]:
    """The bench rows: the paper configuration's training images/s on the GPU, eager and (when
    ``paper.yaml`` sets ``compile`` and not ``quick``) compiled; one row saying it was skipped
    without CUDA. Each is printed as it is measured."""
    cfg = paper_config()
    name = f"train paper config {cfg.backbone} {cfg.image_size}px bs{cfg.batch_size}"
    if not torch.cuda.is_available():
        print(f"{name}: skipped (no CUDA device; run make bench on a GPU)", flush=True)
        return [{"benchmark": name, "setting": "skipped: no CUDA device", "images/s": float("nan")}]
    rows = []
    for compile_ in [False] + ([cfg.compile] if cfg.compile and not quick else []):
        r = train_rate(cfg, steps=3 if quick else 20, warmup=2 if quick else 5, compile_=compile_)
        setting = (f"{torch.cuda.get_device_name()}, amp {cfg.amp}, channels-last, fused AdamW, "
                   f"{'torch.compile ' + (compile_ if isinstance(compile_, str) else 'default') if compile_ else 'eager'}")
        print(f"{name}: {r['images_per_s']:.1f} images/s ({setting}; first steps {r['warmup_s']:.0f} s)", flush=True)
        rows.append({"benchmark": name, "setting": setting, "images/s": r["images_per_s"], "step_s": r["step_s"],
                     "seconds": r["warmup_s"]})
    return rows
