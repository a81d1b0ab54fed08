"""Data-parallel training with torchrun: 2 CPU processes (gloo) match the single-process run.

``batch_size`` is the global batch: each of the 2 ranks takes half of every single-process batch
(the same images, the same augmentation), DDP averages the gradients, and only rank 0 writes.
The model is timm's ``test_convnext`` (LayerNorm: no BatchNorm statistics that differ per rank)
without dropout (whose masks would be drawn per rank), so the two runs are the same computation up
to the order of floating-point reductions: after 2 epochs every predicted probability agrees
within 1e-3 (measured on the 2-core development machine: 1e-6, the CSV's precision; the bound
leaves room for Adam amplifying reduction-order differences on other CPUs), against a mean
difference of about 0.05 for another seed (the control: a DDP that did not average the
gradients, or sharded the batches differently, moves predictions as much as a new seed does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxrkit.utils.paths import project_root


def _train_cmd(tiny_phantom: Path, out: Path, seed: int = 0) -> list[str]:
    return ["-m", "cxrkit.cli", "train", "--data", str(tiny_phantom), "--splits", str(tiny_phantom / "folds.csv"),
            "--backbone", "test_convnext", "--drop-rate", "0", "--image-size", "32", "--batch-size", "16",
            "--eval-batch-size", "32",
            "--epochs", "2", "--lr", "0.001", "--no-progress", "--no-cache", "--seed", str(seed), "--out", str(out)]


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tiny_phantom, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, ddp, other_seed = tmp_path / "single", tmp_path / "ddp", tmp_path / "seed1"
    for out, seed in ((single, 0), (other_seed, 1)):
        res = subprocess.run([sys.executable, *_train_cmd(tiny_phantom, out, seed)], env=env, capture_output=True,
                             text=True, cwd=project_root())
        assert res.returncode == 0, res.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    res = subprocess.run([*torchrun, *_train_cmd(tiny_phantom, ddp)], env=env, capture_output=True, text=True,
                         cwd=project_root())
    assert res.returncode == 0, res.stderr[-3000:]

    m1 = json.loads((single / "metrics.json").read_text())
    m2 = json.loads((ddp / "metrics.json").read_text())
    assert m2["world_size"] == 2 and m1["world_size"] == 1
    assert json.loads((ddp / "provenance.json").read_text())["world_size"] == 2
    for split in ("val", "test"):
        p1, p2, p3 = (pd.read_csv(d / f"pred_{split}.csv").set_index("image") for d in (single, ddp, other_seed))
        assert list(p1.index) == list(p2.index)  # every image predicted once, in the same order
        diff = np.abs(p1.to_numpy() - p2.to_numpy()).max()
        control = np.abs(p1.to_numpy() - p3.to_numpy()).mean()
        assert diff < 1e-3, f"{split}: max |p_ddp - p_single| = {diff:.2g}"
        assert control > 10 * 1e-3, f"{split}: another seed moves predictions by only {control:.2g} on average"
    # only rank 0 wrote: one history, no temporary files left
    assert len(pd.read_csv(ddp / "history.csv")) == 2
    assert not [p for p in ddp.iterdir() if p.name.startswith(".")]


def test_ranks_split_every_batch_of_the_single_process_run():
    from cxrkit.data.pipeline import EpochSampler

    single = EpochSampler(50, seed=3, shuffle=True)
    ranks = [EpochSampler(50, seed=3, shuffle=True, rank=r, world=2) for r in (0, 1)]
    for s in (single, *ranks):
        s.set_epoch(4)
    order, (r0, r1) = single.indices(), (r.indices() for r in ranks)
    assert len(r0) == len(r1) == 25
    for t in range(0, 50, 10):  # single batch of 10 == rank batches of 5 together
        assert sorted(order[t:t + 10]) == sorted(np.concatenate([r0[t // 2:t // 2 + 5], r1[t // 2:t // 2 + 5]]))
    odd = [EpochSampler(7, 0, shuffle=False, rank=r, world=2, pad=False).indices() for r in (0, 1)]
    assert sorted(np.concatenate(odd)) == list(range(7))  # evaluation: no padding, no duplicates
