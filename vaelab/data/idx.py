"""IDX files (LeCun's MNIST format) of unsigned bytes: images (IDX3) and labels (IDX1)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Write uint8 images (N, rows, cols) as an IDX3 file."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Write labels (N,) as an IDX1 file."""
    path.write_bytes(struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes())


def read_idx(path: Path) -> torch.Tensor:
    """Read an uncompressed IDX1/IDX3 file of unsigned bytes: images flat (N, rows*cols), labels (N,)."""
    return read_idx_shaped(path)[0]


def read_idx_shaped(path: Path) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The tensor of `read_idx` and the shape of one item: (1, rows, cols) for images, () for labels."""
    data = Path(path).read_bytes()
    if len(data) < 8 or (data[:4] == struct.pack(">I", IMAGES_MAGIC) and len(data) < 16):
        raise DataError(f"{path} is shorter than an IDX header ({len(data)} bytes)")
    magic, count = struct.unpack(">II", data[:8])
    if magic == IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        shape, offset, item = (count, rows * cols), 16, (1, rows, cols)
    elif magic == LABELS_MAGIC:
        shape, offset, item = (count,), 8, ()
    else:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic number {magic})")
    expected = offset + math.prod(shape)  # Python's integers: a lying header cannot overflow them
    if len(data) != expected:
        raise DataError(f"{path} is truncated or its header is wrong: {len(data):,} bytes, the header says "
                        f"{expected:,}")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy()), item
