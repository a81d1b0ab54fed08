"""Training of one fold and one refiner (paper III.C-E), resumable and deterministic on CPU.

:func:`train` runs the phases in order, each in its own module: the run folder and ``last.pt``
are checked (:mod:`~cxrkit.training.resume`), the process and device chosen
(:mod:`~cxrkit.training.distributed`), the fold's data loaded and checked
(:mod:`~cxrkit.training.fold`), the model, loss, loaders and optimiser built
(:mod:`~cxrkit.training.setup`), a saved state restored (:mod:`~cxrkit.training.resume`), then
per epoch one epoch of training and the validation (:mod:`~cxrkit.training.epoch`) and the
checkpoints (:mod:`~cxrkit.training.checkpoint`), and finally the predictions
(:mod:`~cxrkit.training.finish`). With ``tracking`` set, rank 0 sends the parameters, every
epoch's history row, the final metrics and the provenance to MLflow and/or TensorBoard as they are
written (:mod:`~cxrkit.training.tracking`).

A run folder holds: ``params.json`` and ``provenance.json`` (parameters, git revision, package
versions, device, data fingerprint, ``image_decoding``: the image policy with every default filled
in, the decoder version and how many images were decoded each way; ``dataset_quality``: the loader's
counts, ``CXRDataset.quality``: views kept and dropped, ages made missing, VinDr's readers and
aggregation, a merged dataset's sources, images converted to grey), ``history.csv`` (one row per epoch), ``last.pt`` (written
atomically after every epoch; an interrupted run resumes from it), ``best.pt`` (the evaluated
model of the epoch with the best validation macro AUC: the EMA, or with ``ema_refiner: false``
the EMA backbone and the live refiner), ``pred_val.csv`` / ``pred_test.csv`` (with flip
TTA) and ``*_notta.csv`` (without), ``coupling.csv`` (learned matrix, when the refiner has one),
``metrics.json`` (with ``timings``: the seconds of each phase, :mod:`~cxrkit.training.timing`)
and, with ``tracking``, ``tracking.json`` (the tracker runs, which a resumed run
continues).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from cxrkit.data.images import DECODE_VERSION, ImagePolicy
from cxrkit.training.checkpoint import save_best, save_last
from cxrkit.training.config import TrainConfig
from cxrkit.training.distributed import Dist, check_shared_folder, init_distributed, pick_device
from cxrkit.training.epoch import FaultHook, train_one_epoch, validate
from cxrkit.training.finish import finish
from cxrkit.training.fold import FoldData, load_fold
from cxrkit.training.resume import Progress, TrainingError, check_same_data, read_last, restore
from cxrkit.training.setup import Run, set_up
from cxrkit.training.timing import Clock
from cxrkit.training.tracking import open_tracking
from cxrkit.utils.amp import resolve_amp
from cxrkit.utils.files import check_writable, write_json
from cxrkit.utils.params import ConfigError, to_dict
from cxrkit.utils.paths import resolve
from cxrkit.utils.provenance import write_run_record

__all__ = ["TrainingError", "train"]


def train(cfg: TrainConfig, *, fault_hook: FaultHook | None = None) -> dict[str, Any]:
    """Train one fold of one refiner variant, resuming from ``out/last.pt`` when present.

    Args:
        cfg: Run parameters.
        fault_hook: Test hook ``(global_step, loss) -> loss`` applied to every training loss
            (used to inject non-finite values).

    Returns:
        Summary with the best epoch, best validation macro AUC and output paths.
    """
    cfg.validate()
    clock = Clock()
    t_start = time.time()
    out = resolve(cfg.out)
    check_writable(out, "the run (checkpoints, predictions)", "choose another --out")  # before any data loads
    out.mkdir(parents=True, exist_ok=True)
    params = to_dict(cfg)
    dist, device, amp_dtype = _devices(cfg, out)
    clock.device = device
    state = read_last(out / "last.pt", params)
    tracking = open_tracking(cfg.tracking, out, params, main=dist.main)  # before any data loads
    with tracking:  # the tracker runs end FINISHED, FAILED or KILLED with the run
        clock.lap("start")
        data = load_fold(cfg, out)
        clock.lap("data")
        identity = {"data_fingerprint": data.data_fingerprint, "splits_fingerprint": data.splits_fingerprint}
        check_same_data(state, identity, out / "last.pt")
        if dist.main:
            _write_record(out, params, device, dist, data, state)
            tracking.record(out)
        clock.mark()
        run = set_up(cfg, data, dist, device, amp_dtype, out, params)
        progress = restore(run, state)
        clock.lap("set_up")
        tracking.history(progress.history)  # epochs a resumed run's trackers have not received yet
        while not progress.done and progress.epoch < cfg.epochs:
            _epoch(run, progress, identity, fault_hook, clock)
            tracking.history(progress.history)
        if progress.best["epoch"] < 0:
            raise TrainingError(f"validation macro AUC was undefined in all {len(progress.history)} epoch(s) "
                                f"(history: {out / 'history.csv'}); no best checkpoint was kept")
        clock.mark()
        summary = finish(cfg, data, run.eval_model, run.best_path, device, run.mean, run.std, run.subset, dist)
        clock.lap("final_predictions")
        summary.update({"best_epoch": progress.best["epoch"], "best_val_macro_auc": progress.best["val_macro_auc"],
                        "epochs_run": len(progress.history), "nonfinite_skipped": progress.nonfinite,
                        "amp_overflow_steps": progress.overflow, "world_size": dist.world,
                        "wall_seconds": time.time() - t_start, "timings": clock.summary(), "out": str(out)})
        if dist.main:
            write_json(out / "metrics.json", summary)
            tracking.final(summary, out)
        dist.barrier()
    return summary


def _devices(cfg: TrainConfig, out: Path) -> tuple[Dist, torch.device, torch.dtype | None]:
    """The data-parallel context, this process's device and the autocast dtype, checked before any
    data loads (batches divisible by the processes, the run folder ``out`` shared by every node,
    fp16 only with loss scaling, the weight file)."""
    dist, dist_device = init_distributed(cfg.device)
    check_shared_folder(dist, out)
    if cfg.batch_size % dist.world or cfg.eval_batch_size % dist.world:
        raise ConfigError(f"batch_size {cfg.batch_size} and eval_batch_size {cfg.eval_batch_size} (global batches) "
                          f"must be divisible by the {dist.world} processes")
    device = dist_device or pick_device(cfg.device)
    amp_dtype = resolve_amp(device, cfg.amp)  # fp16 where it cannot be loss-scaled fails here, before any work
    if cfg.pretrained and not resolve(cfg.pretrained).is_file():
        raise FileNotFoundError(f"pretrained: weight file not found: {resolve(cfg.pretrained)}")
    return dist, device, amp_dtype


def _write_record(out: Path, params: dict[str, Any], device: torch.device, dist: Dist, data: FoldData,
                  state: dict[str, Any] | None) -> None:
    """``params.json`` and ``provenance.json`` of the run, with its data and folds."""
    write_run_record(out, params, device=str(device), extra={
        "data_fingerprint": data.data_fingerprint, "splits_fingerprint": data.splits_fingerprint,
        "csv_sha256": data.csv_digest, "n_train": len(data.train_idx), "n_val": len(data.val_idx),
        "n_test": len(data.test_idx), "world_size": dist.world,
        "resumed_from_epoch": state["epoch"] if state else None,
        "image_decoding": {"policy": ImagePolicy.parse(params["image_policy"]).as_dict(),
                           "decoder_version": DECODE_VERSION, "images": data.decoding,
                           "check_recorded": data.check_recorded},
        "dataset_quality": data.quality})


def _epoch(run: Run, progress: Progress, identity: dict[str, str], fault_hook: FaultHook | None,
           clock: Clock) -> None:
    """One epoch: train, validate, keep the best model, decide on early stopping, checkpoint;
    its phases timed on ``clock``."""
    cfg = run.cfg
    t0 = time.time()
    waited = clock.seconds.get("train_data_wait", 0.0) + clock.seconds.get("ema", 0.0)
    trained = train_one_epoch(run, progress, fault_hook, clock)
    t_train = time.time() - t0
    clock.add("train_compute", t_train - (clock.seconds.get("train_data_wait", 0.0) + clock.seconds.get("ema", 0.0)
                                          - waited))
    with clock.phase("validation"):
        val = validate(run)
    val_auc = val["val_macro_auc"]
    progress.history.append({"epoch": progress.epoch + 1, "train_loss": trained["train_loss"],
                             "val_loss": val["val_loss"], "val_macro_auc": val_auc,
                             "lr": run.optimizer.param_groups[0]["lr"],
                             "nonfinite_skipped": trained["nonfinite_skipped"],
                             "amp_overflow_steps": trained["amp_overflow_steps"],
                             "coupling_nonzero": val["coupling_nonzero"], "train_seconds": t_train,
                             "seconds": time.time() - t0})
    progress.epoch += 1
    if val_auc > progress.best["val_macro_auc"]:
        progress.best = {"epoch": progress.epoch, "val_macro_auc": val_auc}
        progress.bad_epochs = 0
        if run.dist.main:
            with clock.phase("checkpoint"):
                save_best(run, progress.epoch, val_auc)
    else:
        progress.bad_epochs += 1
    progress.done = progress.epoch >= cfg.epochs or progress.bad_epochs >= cfg.patience
    if run.dist.main:
        with clock.phase("checkpoint"):
            save_last(run, progress, identity)
    run.dist.barrier()
    if cfg.progress and run.dist.main:
        print(f"fold {cfg.fold} {cfg.refiner}: epoch {progress.epoch} val macro AUC {val_auc:.4f} "
              f"(best {progress.best['val_macro_auc']:.4f} @ {progress.best['epoch']})", flush=True)
