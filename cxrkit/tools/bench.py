"""``make bench``: throughput figures (never asserted in tests; printed and saved).

1. Input pipeline feed rate (images/s through the DataLoader with training augmentation):
   decoding PNGs every epoch vs the pre-resized uint8 cache.
2. Training and inference images/s of the default phantom model, with each pipeline, and
   ``cxrkit infer`` end to end: the 3-fold ensemble with flip TTA on a folder of PNGs
   (:mod:`cxrkit.tools.bench_infer`).
3. The sparse refiner's share of a training step of the paper backbone
   (seresnext101_32x4d) at 380 px (on the GPU when there is one).
4. On a GPU, the paper configuration's training images/s (``params/paper.yaml``: SE-ResNeXt101
   at 380 px, AMP, channels-last, fused AdamW; eager and with its ``compile``;
   :mod:`cxrkit.tools.bench_gpu`); on a CPU a row saying it was skipped.
5. The patient bootstrap of the macro AUC.
6. On the real label tables torchxrayvision ships (skipped, with a message, when it is not
   installed, and by ``--quick``): the seconds of the patient-grouped folds of the NIH table, and
   the patients image-level MIS leaks on CheXpert (:func:`cxrkit.tools.real_tables.real_table_bench`).

The speed goals (:data:`GOALS`) are checked and printed; ``cxrkit bench`` exits with status 1
when one is missed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrkit.data.pipeline import Augment, CXRImages, UInt8Cache, make_loader, to_model_input
from cxrkit.losses import create_loss
from cxrkit.models import create_model, create_refiner
from cxrkit.tools.bench_gpu import paper_gpu_rows
from cxrkit.tools.bench_infer import infer_rates
from cxrkit.tools.real_tables import real_table_bench
from cxrkit.training.config import TrainConfig
from cxrkit.utils.files import write_json
from cxrkit.utils.paths import data_dir, runs_dir
from cxrkit.utils.provenance import environment


def _timed(fn: Callable[[], int], repeats: int = 1) -> float:
    """Items per second of ``fn`` (which returns how many items it processed), best of ``repeats``."""
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def ensure_bench_data(root: Path, patients: int = 350, size: int = 128) -> pd.DataFrame:
    """A small phantom for benchmarking (generated once)."""
    from cxrkit.data.datasets import create_dataset
    from cxrkit.phantom.generate import generate

    if not (root / "train.csv").is_file():
        generate(root, n_patients=patients, size=size, seed=123, progress=False)
    return create_dataset("gxs", root=root).table


def refiner_share(backbone: str = "seresnext101_32x4d", size: int = 380, batch: int = 4,
                  repeats: int = 2, device: str = "cpu") -> dict[str, float]:
    """Seconds of a full training step vs the sparse refiner's forward + penalty + backward.

    The step runs as in training (channels-last and fp16 autocast on CUDA) and both timings
    synchronise the device.
    """
    from cxrkit.utils.amp import autocast_context
    from cxrkit.utils.memory_format import channels_last_default

    dev = torch.device(device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch.manual_seed(0)
    model = create_model(backbone, 14, refiner="sparse", drop_rate=0.4).to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)
    if channels_last_default(dev):
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    loss_fn = create_loss("asl")
    y = (torch.rand(batch, 14, device=dev) < 0.3).float()

    def step() -> None:
        with autocast_context(dev, "auto"):
            logits = model(x)
        loss = loss_fn(logits.float(), y) + model.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    t_step = (time.perf_counter() - t0) / repeats

    refiner = create_refiner("sparse", 14).to(dev)
    with torch.no_grad():
        refiner.A.normal_(0, 0.1)
    z = torch.randn(batch, 14, requires_grad=True, device=dev)
    n = 2000
    for _ in range(50):
        (refiner(z).sum() + refiner.penalty()).backward()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        (refiner(z).sum() + refiner.penalty()).backward()
    sync()
    t_ref = (time.perf_counter() - t0) / n
    return {"step_s": t_step, "refiner_s": t_ref, "share_pct": 100 * t_ref / t_step}


def process_scaling(data: Path, out: Path, processes: tuple[int, ...] = (1, 2), epochs: int = 2) -> list[dict[str, Any]]:
    """Training images/s of the default model with 1 and 2 data-parallel processes (torchrun, gloo, CPU).

    Each run trains fold 0 of ``data`` for ``epochs`` epochs with the same global batch; the
    figure is training images per second of the last epoch's training loop (validation excluded).
    """
    import json
    import subprocess
    import sys

    from cxrkit.data.datasets import create_dataset, fingerprint
    from cxrkit.data.splits import make_splits, save_splits

    table = create_dataset("gxs", root=data, check_images=False).table
    folds = out / "folds.csv"
    if not folds.is_file():
        save_splits(make_splits(table, table.attrs["labels"], n_folds=3, test_size=0.2, seed=0), folds,
                    {"fingerprint": fingerprint(table)})
    rows = []
    for n in processes:
        run = out / f"ddp{n}"
        if run.exists():
            shutil.rmtree(run)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 \
            else [sys.executable]
        threads = max(1, (os.cpu_count() or 1) // n)
        cmd = [*launcher, "-m", "cxrkit.cli", "train", "--data", str(data), "--splits", str(folds), "--epochs",
               str(epochs), "--no-progress", "--no-tta", "--out", str(run)]
        res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                             text=True, timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr[-2000:]}")
        hist = pd.read_csv(run / "history.csv")
        n_train = json.loads((run / "provenance.json").read_text())["n_train"]
        rows.append({"benchmark": f"train {TrainConfig().backbone} data-parallel (torchrun, gloo)",
                     "setting": f"{n} process(es) x {threads} thread(s), cpu",
                     "images/s": n_train / float(hist["train_seconds"].iloc[-1])})
    return rows


def run_bench(data: Path | None = None, out: Path | None = None, quick: bool = False) -> pd.DataFrame:
    """Run every benchmark, print a table, write ``bench.csv`` and ``bench.json`` to ``out``."""
    cfg = TrainConfig()
    data = data or data_dir() / "bench"
    out = out or runs_dir() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    table = ensure_bench_data(data, patients=60 if quick else 350, size=cfg.image_size)
    paths = table["path"].tolist()
    y = table[list(table.attrs["labels"])].to_numpy(dtype=np.float32)
    aug = Augment(cfg.image_size, cfg.rrc_scale, cfg.hflip, cfg.rotate)
    cache = UInt8Cache(paths, cfg.image_size, data_dir() / "cache")
    rows = _feed_rates(cfg, paths, y, aug, cache, quick)
    rows += _model_rates(cfg, paths, y, aug, cache, quick)
    rows += infer_rates(data / "images", list(table.attrs["labels"]), out, quick)
    rows += process_scaling(data, out, epochs=1 if quick else 2)
    gpu = torch.cuda.is_available()
    batch = 2 if quick else (24 if gpu else 4)  # the paper's batch on a GPU
    share = refiner_share(size=128 if quick else 380, batch=batch, repeats=1 if quick else (10 if gpu else 2),
                          device="cuda" if gpu else "cpu")
    rows.append({"benchmark": "refiner share of a train step, seresnext101_32x4d",
                 "setting": f"{128 if quick else 380}px, batch {batch}, {'cuda, fp16 autocast' if gpu else 'cpu'}",
                 "images/s": float("nan"), "step_s": share["step_s"], "refiner_s": share["refiner_s"],
                 "share_%": share["share_pct"]})
    rows += paper_gpu_rows(quick)
    n_img, n_boot = (600, 100) if quick else (3000, 1000)
    rows.append({"benchmark": f"patient bootstrap of macro AUC, {n_boot} replicates",
                 "setting": f"{n_img} images x 14 labels, cpu", "images/s": float("nan"),
                 "seconds": bootstrap_seconds(n=n_img, n_boot=n_boot)})
    rows += [] if quick else real_table_bench(out / "real_tables")
    result = pd.DataFrame(rows)
    goals = check_goals(result)
    result.to_csv(out / "bench.csv", index=False)
    write_json(out / "bench.json", {"results": rows, "goals": goals, "quick": quick, **environment("cpu")})
    with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.float_format", "{:.4g}".format):
        print(result.to_string(index=False))
        print("\ngoals:")
        for g in goals:
            print(f"  [{'pass' if g['met'] else 'FAIL'}] {g['goal']}: measured {g['measured']:.4g}")
    result.attrs["goals"] = goals
    return result


def _feed_rates(cfg: TrainConfig, paths: list[str], y: np.ndarray, aug: Augment, cache: UInt8Cache,
                quick: bool) -> list[dict[str, Any]]:
    """Images/s through the DataLoader, decoding PNGs every epoch vs the uint8 cache: without
    augmentation (0 workers), then with training augmentation (0 and 2 workers)."""
    rows: list[dict[str, Any]] = []
    workers_list = (0,) if quick else (0, min(2, os.cpu_count() or 1))

    def feed(pipeline: str, workers: int, augment: Augment | None = aug) -> float:
        ds = CXRImages(paths, y, cfg.image_size, augment=augment, cache=cache if pipeline == "cache" else None)
        loader = make_loader(ds, cfg.batch_size, shuffle=True, seed=0, workers=workers)

        def one_epoch() -> int:
            return sum(len(b[0]) for b in loader)

        one_epoch()  # start workers
        return _timed(one_epoch, repeats=1 if quick else 2)

    plain = {p: feed(p, 0, augment=None) for p in ("decode", "cache")}  # evaluation pipeline: no augmentation
    for p, r in plain.items():
        rows.append({"benchmark": "feed (no augmentation)", "setting": f"{p}, 0 workers", "images/s": r})
    rows.append({"benchmark": "feed speed-up cache/decode, no augmentation", "setting": "0 workers",
                 "images/s": plain["cache"] / plain["decode"]})
    for workers in workers_list:
        rates = {p: feed(p, workers) for p in ("decode", "cache")}
        for p, r in rates.items():
            rows.append({"benchmark": "feed (augmented batches)", "setting": f"{p}, {workers} workers",
                         "images/s": r})
        rows.append({"benchmark": "feed speed-up cache/decode", "setting": f"{workers} workers",
                     "images/s": rates["cache"] / rates["decode"]})
    return rows


def _model_rates(cfg: TrainConfig, paths: list[str], y: np.ndarray, aug: Augment, cache: UInt8Cache,
                 quick: bool) -> list[dict[str, Any]]:
    """Training and inference images/s of the default model on the CPU, with each pipeline."""
    rows: list[dict[str, Any]] = []
    torch.manual_seed(0)
    model = create_model(cfg.backbone, len(y[0]), refiner="sparse", drop_rate=cfg.drop_rate)
    mean, std = model.data_config["mean"], model.data_config["std"]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_fn = create_loss("asl")
    device = torch.device("cpu")
    n_train = 64 if quick else 256
    for pipeline in ("decode", "cache"):
        ds = CXRImages(paths[:n_train], y[:n_train], cfg.image_size, augment=aug,
                       cache=cache if pipeline == "cache" else None)
        loader = make_loader(ds, cfg.batch_size, shuffle=True, seed=0, workers=0)

        def train_epoch(loader: torch.utils.data.DataLoader = loader) -> int:
            model.train()
            n = 0
            for images, t, m in loader:
                loss = loss_fn(model(to_model_input(images, mean, std, device)), t, m) + model.penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
                n += len(images)
            return n

        def infer_epoch(loader: torch.utils.data.DataLoader = loader) -> int:
            model.eval()
            n = 0
            with torch.no_grad():
                for images, _, _ in loader:
                    model(to_model_input(images, mean, std, device))
                    n += len(images)
            return n

        rows.append({"benchmark": f"train {cfg.backbone} {cfg.image_size}px bs{cfg.batch_size}",
                     "setting": f"{pipeline}, cpu, {torch.get_num_threads()} threads", "images/s": _timed(train_epoch)})
        rows.append({"benchmark": f"inference {cfg.backbone} {cfg.image_size}px",
                     "setting": f"{pipeline}, cpu", "images/s": _timed(infer_epoch)})
    return rows


#: Speed goals of the kit: (description, benchmark row, setting prefix, column, comparison, bound).
GOALS = (
    ("uint8 cache feeds >= 2x faster than decoding PNGs every epoch",
     "feed speed-up cache/decode, no augmentation", "0 workers", "images/s", ">=", 2.0),
    ("sparse refiner < 1% of a SE-ResNeXt101 training step",
     "refiner share of a train step, seresnext101_32x4d", "", "share_%", "<", 1.0),
)


def check_goals(result: pd.DataFrame) -> list[dict[str, Any]]:
    """Each goal of :data:`GOALS` with the measured value and whether it is met."""
    out = []
    for goal, bench, setting, column, op, bound in GOALS:
        row = result[(result["benchmark"] == bench) & result["setting"].str.startswith(setting)]
        value = float(row[column].iloc[0])
        met = value >= bound if op == ">=" else value < bound
        out.append({"goal": goal, "measured": value, "bound": f"{op} {bound:g}", "met": bool(met)})
    return out


def bootstrap_seconds(n: int = 3000, n_boot: int = 1000) -> float:
    """Wall seconds of a patient bootstrap of the macro AUC (14 labels, about 2 images per patient)."""
    from cxrkit.evaluation.bootstrap import bootstrap_macro_auc

    rng = np.random.default_rng(0)
    y = (rng.random((n, 14)) < 0.25).astype(float)
    s = y + rng.normal(size=y.shape)
    t0 = time.perf_counter()
    bootstrap_macro_auc(y, s, n_boot=n_boot, seed=0, groups=np.arange(n) // 2)
    return time.perf_counter() - t0
