from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrkit.data.datasets import create_dataset
from cxrkit.data.pipeline import (
    Augment,
    CXRImages,
    EpochSampler,
    UInt8Cache,
    make_loader,
    to_model_input,
)
from cxrkit.utils.files import atomic_write


@pytest.fixture(scope="module")
def table(tiny_phantom):
    return create_dataset("gxs", root=tiny_phantom).table


def _targets(table):
    return table[table.attrs["labels"]].to_numpy(dtype=np.float32)


def test_cache_matches_decoding(table, tmp_path):
    paths = table["path"].tolist()[:20]
    cache = UInt8Cache(paths, 32, tmp_path)
    decoded = CXRImages(paths, _targets(table)[:20], 32)
    cached = CXRImages(paths, _targets(table)[:20], 32, cache=cache)
    for i in range(20):
        assert torch.equal(decoded[i][0], cached[i][0])
    # second construction reuses the file; a different size builds another one
    assert UInt8Cache(paths, 32, tmp_path).file == cache.file
    assert UInt8Cache(paths, 24, tmp_path).file != cache.file


def test_augmentation_depends_only_on_seed_epoch_index(table):
    paths, y = table["path"].tolist()[:8], _targets(table)[:8]
    aug = Augment(32, (0.5, 1.0), hflip=0.5, rotate=10)
    a = CXRImages(paths, y, 32, augment=aug, seed=1)
    assert torch.equal(a[(3, 2)][0], a[(3, 2)][0])
    assert not torch.equal(a[(3, 2)][0], a[(3, 1)][0])
    b = CXRImages(paths, y, 32, augment=aug, seed=2)
    assert not torch.equal(a[(3, 2)][0], b[(3, 2)][0])


def test_batches_identical_with_and_without_workers(table):
    paths, y = table["path"].tolist()[:12], _targets(table)[:12]
    ds = CXRImages(paths, y, 32, augment=Augment(32), seed=0)
    batches = []
    for workers in (0, 2):
        loader = make_loader(ds, 4, shuffle=True, seed=0, workers=workers)
        loader.sampler.set_epoch(1)
        batches.append(torch.cat([b[0] for b in loader]))
    assert torch.equal(*batches)


def test_sampler_permutation_per_epoch():
    s = EpochSampler(50, seed=0, shuffle=True)
    s.set_epoch(0)
    e0 = [i for i, _ in s]
    s.set_epoch(1)
    e1 = [i for i, _ in s]
    assert sorted(e0) == list(range(50)) and e0 != e1
    s.set_epoch(0)
    assert [i for i, _ in s] == e0
    assert [i for i, _ in EpochSampler(5, 0, shuffle=False)] == list(range(5))


def test_unknown_labels_are_masked_not_zero_filled(table):
    y = _targets(table)[:4].copy()
    y[1, 3] = np.nan
    ds = CXRImages(table["path"].tolist()[:4], y, 32)
    _, target, mask = ds[1]
    assert mask[3] == 0 and target[3] == 0 and mask.sum() == y.shape[1] - 1


def test_to_model_input_normalises_to_three_channels():
    img = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    x = to_model_input(img, (0.5, 0.5, 0.5), (0.5, 0.25, 1.0), torch.device("cpu"))
    assert x.shape == (2, 3, 4, 4)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, 2.0, 0.5]))


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "best.pt"
    target.write_text("complete")

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_atomic_write_gives_the_permissions_open_gives(tmp_path):
    """Not the temporary file's private 0600: a run folder on a lab's shared disk stays readable by
    the group as the umask allows (0666 less the umask, as for a file written with open)."""
    import os
    import stat
    from pathlib import Path

    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.json", lambda tmp: Path(tmp).write_text("{}"))
        (tmp_path / "b.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640
