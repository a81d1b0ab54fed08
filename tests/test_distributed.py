"""Data-parallel training with torchrun: 2 CPU processes (gloo) match the single-process run, on
one node (``--standalone``) and as 2 "nodes" of one process each meeting at a c10d rendezvous.

``batch_size`` is the global batch: each of the 2 ranks takes half of every single-process batch
(the same images, the same augmentation), DDP averages the gradients, and only rank 0 writes.
The model is timm's ``test_convnext`` (LayerNorm: no BatchNorm statistics that differ per rank)
without dropout (whose masks would be drawn per rank), so the two runs are the same computation up
to the order of floating-point reductions: after 2 epochs every predicted probability agrees
within 1e-3 (measured on the 2-core development machine: 1e-6, the CSV's precision; the bound
leaves room for Adam amplifying reduction-order differences on other CPUs), against a mean
difference of about 0.05 for another seed (the control: a DDP that did not average the
gradients, or sharded the batches differently, moves predictions as much as a new seed does).

The two "nodes" are two torchrun processes on localhost (``--nnodes 2 --nproc-per-node 1``, a
c10d rendezvous on a free port): each process is LOCAL_RANK 0 of its node and the rendezvous gives
them RANK 0 and 1, as on two machines (``--node-rank`` is given as on a cluster; the c10d backend
assigns the ranks itself). Processes that do not see the run folder rank 0 writes are refused,
naming them (a cluster's nodes must share a file system).
"""

from __future__ import annotations

import json
import os
import socket
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


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def single_runs(tiny_phantom, tmp_path_factory):
    """The single-process runs the data-parallel ones are compared with: seed 0 and, as the
    control, seed 1."""
    tmp = tmp_path_factory.mktemp("single")
    single, other_seed = tmp / "single", tmp / "seed1"
    for out, seed in ((single, 0), (other_seed, 1)):
        res = subprocess.run([sys.executable, *_train_cmd(tiny_phantom, out, seed)], env=ENV, capture_output=True,
                             text=True, cwd=project_root())
        assert res.returncode == 0, res.stderr[-3000:]
    return single, other_seed


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
def test_two_process_gloo_matches_single_process(tiny_phantom, tmp_path, single_runs):
    env = ENV
    (single, other_seed), ddp = single_runs, tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    res = subprocess.run([*torchrun, *_train_cmd(tiny_phantom, ddp)], env=env, capture_output=True, text=True,
                         cwd=project_root())
    assert res.returncode == 0, res.stderr[-3000:]

    _check_same_as_single_process(single, ddp, other_seed)


def _check_same_as_single_process(single: Path, ddp: Path, other_seed: Path) -> None:
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
    # only rank 0 wrote: one history, no temporary files (nor the shared-folder marker) left
    assert len(pd.read_csv(ddp / "history.csv")) == 2
    assert not [p for p in ddp.iterdir() if p.name.startswith(".")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.xdist_group("ddp")
def test_two_nodes_with_a_c10d_rendezvous_match_single_process(tiny_phantom, tmp_path, single_runs):
    """The multi-node recipe of the README on localhost: one torchrun per "node"."""
    (single, other_seed), nodes = single_runs, tmp_path / "nodes"
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                               "--rdzv-id", f"cxrkit-{port}", *_train_cmd(tiny_phantom, nodes)],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=project_root())
             for rank in (0, 1)]
    results = [p.communicate(timeout=900) for p in procs]  # a hang guard, not a timing
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    _check_same_as_single_process(single, nodes, other_seed)


def _check_folder(rank: int, world: int, init_file: str, folders: list[str], errors: str) -> None:
    """One process of :func:`test_ranks_that_do_not_share_the_run_folder_are_refused`."""
    import torch

    from cxrkit.training.distributed import Dist, DistributedError, check_shared_folder

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        check_shared_folder(Dist(rank, world, 0), Path(folders[rank]))
        Path(errors, f"rank{rank}").write_text("ok")
    except DistributedError as exc:
        Path(errors, f"rank{rank}").write_text(str(exc))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ranks_that_do_not_share_the_run_folder_are_refused(tmp_path):
    """Rank 1 looks at another folder than rank 0 writes to (as a node without the shared file
    system would): both ranks stop, naming rank 1 and its host."""
    import torch.multiprocessing as mp

    folders = [tmp_path / "run", tmp_path / "elsewhere"]
    for f in folders:
        f.mkdir()
    mp.spawn(_check_folder, args=(2, str(tmp_path / "init"), [str(f) for f in folders], str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        message = (tmp_path / f"rank{rank}").read_text()
        assert message.startswith(f"rank 1 on {socket.gethostname()} cannot see the run folder "), message
        assert f"that rank 0 writes on {socket.gethostname()}" in message
        assert "a file system every node mounts at the same path" in message
    assert not list(folders[0].iterdir())  # the marker is removed
    mp.spawn(_check_folder, args=(2, str(tmp_path / "init2"), [str(folders[0])] * 2, str(tmp_path)), nprocs=2)
    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["ok", "ok"]


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


@pytest.mark.parametrize("device,cuda,local_rank,expect", [
    ("auto", False, 1, ("gloo", "cpu")),  # CPU nodes
    ("auto", True, 1, ("nccl", "cuda:1")),  # the node's second GPU: LOCAL_RANK, not the global RANK (3)
    ("cpu", True, 1, ("gloo", "cpu")),  # GPUs present, a CPU run asked for
    ("auto", True, 2, "process 2 of node .* has no GPU: 2 visible; start at most that many processes per node"),
])
def test_process_group_backend_and_device_follow_local_rank_and_device(monkeypatch, device, cuda, local_rank, expect):
    import torch

    from cxrkit.training.distributed import DistributedError, init_distributed

    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: chosen.append(backend))
    if isinstance(expect, str):
        with pytest.raises(DistributedError, match=expect):
            init_distributed(device)
        assert chosen == []  # refused before joining the group
        return
    dist, dev = init_distributed(device)
    assert (chosen[0], str(dev)) == expect
    assert (dist.rank, dist.world, dist.local_rank, dist.main) == (3, 4, local_rank, False)
