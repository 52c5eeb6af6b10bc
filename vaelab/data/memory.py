"""Data sets held in device memory as float tensors, served in shuffled index-slice batches.

No per-sample Python, no DataLoader. Images are flat, (N, C*H*W), with their shape kept beside.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from vaelab.errors import DataError


@dataclass
class Split:
    """Images as floats in [0, 1], shape (N, D), and labels (N,) or None, on one device."""

    x: torch.Tensor
    y: torch.Tensor | None = None
    _digest: tuple[torch.Tensor, str] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.x)

    def digest(self) -> str:
        """The images as used, hashed (sha256, 8 hex digits: MLflow's dataset digest) once for
        this `x`: a stacked group's members log the same split, and 188 MB take 0.1-0.3 s each."""
        with _HASHING:  # the members' logging threads ask at once: one hashes, the others wait
            if self._digest is None or self._digest[0] is not self.x:
                images = np.ascontiguousarray(self.x.detach().cpu().numpy())
                self._digest = (self.x, hashlib.sha256(images.data).hexdigest()[:8])  # releases the GIL
            return self._digest[1]


_HASHING = threading.Lock()


@dataclass
class Dataset:
    train: Split
    test: Split
    binarize: bool  # dynamic binarization of training batches; the test set is binarized once
    image_shape: tuple[int, ...] = (1, 28, 28)  # (C, H, W) of one image
    description: str = ""  # where the data came from, for the console

    @property
    def dim(self) -> int:
        return math.prod(self.image_shape)

    @property
    def labelled(self) -> bool:
        return self.train.y is not None and self.test.y is not None


def make_split(x: torch.Tensor, y: torch.Tensor | None, scale: float, device: torch.device, what: str) -> Split:
    """Floats in [0, 1] from raw values (x / scale), flat, on `device`; checks labels and range."""
    if y is not None and len(x) != len(y):
        raise DataError(f"{what}: {len(x)} images but {len(y)} labels")
    if not len(x):
        raise DataError(f"{what} has no images")
    x = x.reshape(len(x), -1).to(device, torch.float32) / scale
    bad = int((~torch.isfinite(x)).sum())
    if bad:  # a comparison with NaN is false: the range check below would let them through
        raise DataError(f"{what}: {bad:,} pixel values are not finite numbers (NaN or inf)")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{what}: pixel values divided by data.scale={scale} fall outside [0, 1]"
                        f" ({x.min().item():g} to {x.max().item():g}); set data.scale")
    return Split(x=x, y=None if y is None else y.to(device, torch.long))


def limited(x: torch.Tensor, limit: int | None, what: str) -> torch.Tensor:
    """The first `limit` images; a limit above their number says so once, and takes them all."""
    if limit is not None and limit > len(x):
        print(f"vaelab: {what} has {len(x):,} images, fewer than the limit {limit:,}: using all {len(x):,}")
    return x[:limit]


def finish_dataset(train: Split, test: Split, image_shape: tuple[int, ...], binarize: str = "none",
                   binarize_seed: int = 0, description: str = "") -> Dataset:
    """The data set, with one fixed stochastic binarization of the test set under `dynamic`."""
    if train.x.shape[1] != math.prod(image_shape) or test.x.shape[1] != train.x.shape[1]:
        raise DataError(f"images of {train.x.shape[1]} (train) and {test.x.shape[1]} (test) values do not"
                        f" match the shape {tuple(image_shape)}; set data.shape")
    dynamic = binarize == "dynamic"
    if dynamic:  # as in Burda et al. 2015
        gen = torch.Generator(device="cpu").manual_seed(binarize_seed)
        test.x = torch.bernoulli(test.x.cpu(), generator=gen).to(test.x.device)
    return Dataset(train=train, test=test, binarize=dynamic, image_shape=tuple(image_shape), description=description)


def batches(
    x: torch.Tensor, batch_size: int, generator: torch.Generator, binarize: bool = False
) -> Iterator[torch.Tensor]:
    """Shuffled mini-batches of `x` by index slicing; the last one may be smaller."""
    order = torch.randperm(len(x), device=x.device, generator=generator)  # (N,)
    for start in range(0, len(x), batch_size):
        xb = x.index_select(0, order[start : start + batch_size])  # (B, D); 3-4x faster than x[idx] on CPU
        yield torch.bernoulli(xb, generator=generator) if binarize else xb
