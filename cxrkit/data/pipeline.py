"""Image pipeline: decoding or a pre-resized uint8 cache, seeded augmentation, batching.

Images travel as uint8 ``(1, S, S)`` tensors; conversion to float, ImageNet normalisation and
grey -> 3-channel expansion happen on the compute device, batch-wise (:func:`to_model_input`),
so workers move 4x fewer bytes and a GPU does the arithmetic.

Augmentation randomness is a pure function of ``(seed, epoch, index)``: the sampler yields
``(index, epoch)`` pairs and each sample draws from its own generator. Results therefore do
not depend on the number of workers, and a resumed run sees exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from cxrkit.data.images import DECODE_VERSION, ImagePolicy, load_image
from cxrkit.utils.files import atomic_write, check_writable


def _sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and platforms)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class UInt8Cache:
    """All images of a table decoded once, resized to ``size`` and stored as an ``(N, S, S)`` memmap.

    The cache file is derived data: its name is a hash of the image paths, file sizes,
    modification times, ``size``, the decoder's version (:data:`cxrkit.data.images.DECODE_VERSION`:
    a cache decoded before EXIF orientations were applied is not reused) and the decoding policy
    (:meth:`cxrkit.data.images.ImagePolicy.key`: a cache of DICOMs windowed otherwise is not
    reused); it is rebuilt when any of them changes. The policy is also written to the cache's
    ``.json`` sidecar.

    Args:
        paths: the image files, in row order.
        size: side of the square images in pixels.
        cache_dir: folder of the cache files.
        workers: decoding threads (None: up to 8).
        progress: show a tqdm bar while building.
        policy: how images of more than 8 bits become 8-bit (None: defaults).

    Raises:
        NotWritableError: the cache file is missing and ``cache_dir`` cannot be written, before
            any image is decoded.
    """

    def __init__(self, paths: Sequence[str], size: int, cache_dir: str | Path, workers: int | None = None,
                 progress: bool = False, policy: ImagePolicy | None = None) -> None:
        self.paths = list(paths)
        self.size = size
        self.policy = policy or ImagePolicy()
        key = hashlib.sha256()
        for p in self.paths:
            st = os.stat(p)
            key.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        key.update(f"{size}\0decoder {DECODE_VERSION}\0policy {self.policy.key()}".encode())
        self.file = Path(cache_dir) / f"u8_{size}px_{len(self.paths)}_{key.hexdigest()[:16]}.npy"
        if not self.file.is_file():
            check_writable(cache_dir, "the uint8 image cache", "train with cache: false (--no-cache) to decode "
                                                          "the images every epoch instead")
            self._build(workers, progress)
        self.array = np.load(self.file, mmap_mode="r")
        if self.array.shape != (len(self.paths), size, size):
            raise RuntimeError(f"cache {self.file} has shape {self.array.shape}, expected "
                               f"{(len(self.paths), size, size)}; delete it to rebuild")

    def _build(self, workers: int | None, progress: bool) -> None:
        from tqdm import tqdm

        n, s = len(self.paths), self.size

        def write(tmp: str) -> None:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, s, s))

            def fill(i: int) -> None:
                arr[i] = load_image(self.paths[i], s, self.policy)

            with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
                list(tqdm(pool.map(fill, range(n)), total=n, disable=not progress,
                          desc=f"caching {n} images at {s}px", leave=False))
            arr.flush()

        atomic_write(self.file, write)
        atomic_write(self.file.with_suffix(".json"), lambda tmp: Path(tmp).write_text(
            json.dumps({"n": n, "size": s, "decoder_version": DECODE_VERSION, "image_policy": self.policy.as_dict(),
                        "first": self.paths[:3]}, indent=1)))

    def __getitem__(self, i: int) -> np.ndarray:
        return self.array[i]


class Augment:
    """Paper III.A(b): RandomResizedCrop(scale), horizontal flip, rotation, optional jitter.

    Parameters are drawn from the given numpy generator, so the result is reproducible.
    """

    def __init__(self, size: int, scale: Sequence[float] = (0.84, 1.0), hflip: float = 0.5,
                 rotate: float = 10.0, color_jitter: float = 0.0) -> None:
        self.size, self.scale, self.hflip = size, tuple(scale), hflip
        self.rotate, self.color_jitter = rotate, color_jitter

    def __call__(self, img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        _, h, w = img.shape
        area = h * w
        log_ratio = (math.log(3 / 4), math.log(4 / 3))
        top, left, ch, cw = 0, 0, h, w
        for _ in range(10):  # torchvision's RandomResizedCrop sampling, with our generator
            target = area * rng.uniform(*self.scale)
            ratio = math.exp(rng.uniform(*log_ratio))
            cw_ = int(round(math.sqrt(target * ratio)))
            ch_ = int(round(math.sqrt(target / ratio)))
            if 0 < cw_ <= w and 0 < ch_ <= h:
                top, left, ch, cw = int(rng.integers(0, h - ch_ + 1)), int(rng.integers(0, w - cw_ + 1)), ch_, cw_
                break
        img = TF.resized_crop(img, top, left, ch, cw, [self.size, self.size], antialias=True)
        if rng.random() < self.hflip:
            img = TF.horizontal_flip(img)
        if self.rotate:
            img = TF.rotate(img, float(rng.uniform(-self.rotate, self.rotate)),
                            interpolation=TF.InterpolationMode.BILINEAR)
        if self.color_jitter:
            j = self.color_jitter
            img = TF.adjust_brightness(img, float(rng.uniform(1 - j, 1 + j)))
            img = TF.adjust_contrast(img, float(rng.uniform(1 - j, 1 + j)))
        return img


class CXRImages(Dataset):
    """Images and labels of a table as ``(uint8 image (1,S,S), target (L,), mask (L,))``.

    Items are addressed by ``(index, epoch)`` (see :class:`EpochSampler`) or a plain index
    (epoch 0). Unknown labels (NaN) get target 0 and mask 0. Without a cache, images are decoded
    every time under ``policy`` (None: defaults).
    """

    def __init__(self, paths: Sequence[str], targets: np.ndarray, size: int, *, augment: Augment | None = None,
                 cache: UInt8Cache | None = None, seed: int = 0, policy: ImagePolicy | None = None) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} paths but {len(targets)} label rows")
        self.paths = list(paths)
        targets = np.asarray(targets, dtype=np.float32)
        self.mask = torch.from_numpy(np.isfinite(targets).astype(np.float32))
        self.targets = torch.from_numpy(np.nan_to_num(targets, nan=0.0))
        self.size, self.augment, self.cache, self.seed = size, augment, cache, seed
        self.policy = policy or ImagePolicy()

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        """The (unaugmented) uint8 image ``i`` at the pipeline size, as ``(1, S, S)``."""
        arr = self.cache[i] if self.cache is not None else load_image(self.paths[i], self.size, self.policy)
        return torch.from_numpy(np.require(arr, requirements=["C", "W"]))[None]  # copies read-only arrays

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        img = self.image(i)
        if self.augment is not None:
            img = self.augment(img, np.random.default_rng(_sample_seed(self.seed, epoch, i)))
        return img, self.targets[i], self.mask[i]


class EpochSampler(Sampler):
    """Yields ``(index, epoch)``; shuffles with a permutation that depends only on (seed, epoch).

    With ``world > 1`` (data-parallel training) rank ``r`` takes ``order[r::world]`` of the same
    permutation, so at every step the union of the ranks' batches (each ``batch / world``) is
    exactly the single-process batch. ``pad=True`` (training) repeats the first indices so every
    rank has the same number of samples; evaluation uses ``pad=False`` and gathers by index.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, rank: int = 0, world: int = 1, pad: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0
        self.rank, self.world, self.pad = rank, world, pad

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's dataset indices for the current epoch, in order."""
        if self.shuffle:
            order = np.random.default_rng(_sample_seed(self.seed, self.epoch, 7919)).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.world > 1 and self.pad and self.n % self.world:
            order = np.concatenate([order, order[: self.world - self.n % self.world]])
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(int(i), self.epoch) for i in self.indices()])

    def __len__(self) -> int:
        return len(self.indices())


def make_loader(dataset: CXRImages, batch_size: int, *, shuffle: bool, seed: int, workers: int,
                drop_last: bool = False, pin_memory: bool = False, rank: int = 0, world: int = 1,
                pad: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader over an :class:`EpochSampler` (call ``loader.sampler.set_epoch(e)`` each epoch).

    ``batch_size`` is per process: the caller divides the global batch by ``world``.
    """
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, shuffle, rank, world, pad),
        num_workers=workers, drop_last=drop_last, pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )


def to_model_input(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                   device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B,1,S,S)`` -> normalised float ``(B,3,S,S)`` on ``device`` (grey copied to RGB)."""
    x = images.to(device, non_blocking=True).float().div_(255.0).expand(-1, 3, -1, -1)
    m = torch.tensor(mean, device=device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
