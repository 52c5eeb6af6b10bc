"""Where a data set comes from, one class per kind, chosen by `data._target_`:
torchvision's IDX data sets (MNIST, Fashion-MNIST, KMNIST), and a user's own IDX or .npz files.

Each is built from the `data` config and has `load(device) -> Dataset`. A new source is a class
here with that method and a file in conf/data/.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_method

from vaelab.data.acquire import IDX_FILES, default_root, ensure_files, raw_dir, torchvision_fetcher
from vaelab.data.digest import files_digest
from vaelab.data.idx import read_idx_shaped
from vaelab.data.memory import Dataset, Split, finish_dataset, limited, make_split
from vaelab.errors import DataError
from vaelab.paths import home


class Source:
    """What every source shares: limits and binarization."""

    def __init__(self, name: str = "data", limit: int | None = None, test_limit: int | None = None,
                 binarize: str = "none", binarize_seed: int = 0):
        self.name, self.limit, self.test_limit = name, limit, test_limit
        self.binarize, self.binarize_seed = binarize, binarize_seed

    def finish(self, train: Split, test: Split, shape: Sequence[int], description: str) -> Dataset:
        return finish_dataset(train, test, tuple(shape), self.binarize, self.binarize_seed, description)

    def digest(self) -> str:
        """A digest of the files `load` reads (cached by size and times), for the run's identity."""
        return files_digest(self.files(), home() / "data-digests.json")

    def files(self) -> list[Path]:
        """The files `load` reads."""
        return []


class TorchvisionIdx(Source):
    """An MNIST-format data set in torchvision's layout, `<root>/<folder>/raw`, md5-verified;
    fetched with torchvision's `download` class, then with any `offline` fetchers (dotted paths)."""

    def __init__(self, root: str | None = None, folder: str = "MNIST", md5: Mapping[str, str] | None = None,
                 verify: bool = True, download: str | None = None, offline: Sequence[str] = (), **kw):
        super().__init__(**kw)
        self.raw = raw_dir(root or default_root(), folder)
        self.folder, self.md5, self.verify = folder, dict(md5 or {}), verify
        self.fetchers = {"torchvision download": torchvision_fetcher(download)} if download else {}
        self.fetchers |= {path.rsplit(".", 1)[-1]: get_method(path) for path in offline}

    def digest(self) -> str:
        """With md5 sums to check against (they are in the config, hence the identity), none is needed."""
        return "" if self.verify and self.md5 else super().digest()

    def files(self) -> list[Path]:
        raw = ensure_files(self.raw, None, self.fetchers, self.folder)
        return [raw / name for name in IDX_FILES]

    def load(self, device: torch.device) -> Dataset:
        raw = ensure_files(self.raw, self.md5 if self.verify else None, self.fetchers, self.folder)
        how = "md5 verified" if self.verify else "md5 check off"
        return self.finish(*load_idx_splits(raw, device, self.limit, self.test_limit),
                           description=f"{self.folder} from {raw} ({how})")


class IdxFiles(Source):
    """A user's own IDX files: `<path>/{train,t10k}-images-idx3-ubyte`, labels beside them if present."""

    def __init__(self, path: str = "???", shape: Sequence[int] | None = None, **kw):
        super().__init__(**kw)
        self.path, self.shape = Path(path).expanduser(), shape

    def files(self) -> list[Path]:
        """The IDX files there (labels are optional; images are not)."""
        for images in IDX_FILES[::2]:  # train-images, t10k-images
            if not (self.path / images).is_file():
                raise DataError(f"{self.path / images} is missing")
        return [self.path / name for name in IDX_FILES if (self.path / name).is_file()]

    def load(self, device: torch.device) -> Dataset:
        train, test, shape = load_idx_splits(self.path, device, self.limit, self.test_limit)
        return self.finish(train, test, self.shape or shape, f"{self.name} from {self.path} (IDX)")


class NpzFile(Source):
    """A user's own .npz: arrays `x_train`, `x_test` (N, ...) of `shape`, values up to `scale`
    (255 for bytes, 1 for floats in [0, 1]); `y_train`, `y_test` optional."""

    def __init__(self, path: str = "???", shape: Sequence[int] = (1, 28, 28), scale: float = 255.0, **kw):
        super().__init__(**kw)
        self.path, self.shape, self.scale = Path(path).expanduser(), tuple(shape), scale

    def files(self) -> list[Path]:
        if not self.path.is_file():
            raise DataError(f"data.path={self.path} is not a file; give an .npz with x_train and x_test")
        return [self.path]

    def load(self, device: torch.device) -> Dataset:
        self.files()
        try:
            npz = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise DataError(f"data.path={self.path} is not an .npz file ({err})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):  # a single .npy array
            raise DataError(f"data.path={self.path} is one array, not an .npz with x_train and x_test")
        with npz:
            missing = {"x_train", "x_test"} - set(npz.files)
            if missing:
                raise DataError(f"{self.path} lacks {', '.join(sorted(missing))} (it has {', '.join(npz.files)})")
            splits = [self._split(npz, part, limit, device)
                      for part, limit in (("train", self.limit), ("test", self.test_limit))]
        return self.finish(*splits, self.shape, f"{self.name} from {self.path} (npz)")

    def _split(self, npz: np.lib.npyio.NpzFile, part: str, limit: int | None, device: torch.device) -> Split:
        x = limited(torch.from_numpy(np.asarray(npz[f"x_{part}"]).astype(np.float32)), limit, f"{self.path} x_{part}")
        y = torch.from_numpy(np.asarray(npz[f"y_{part}"])[:limit].astype(np.int64)) if f"y_{part}" in npz.files else None
        return make_split(x, y, self.scale, device, f"{self.path} x_{part}")


def load_idx_splits(raw: Path, device: torch.device, limit: int | None = None,
                    test_limit: int | None = None) -> tuple[Split, Split, tuple[int, ...]]:
    """Train and test splits from `{train,t10k}-{images,labels}-idx*-ubyte` in `raw`; labels optional."""
    splits, shape = [], ()
    for prefix, lim in (("train", limit), ("t10k", test_limit)):
        images = raw / f"{prefix}-images-idx3-ubyte"
        if not images.is_file():
            raise DataError(f"{images} is missing")
        x, shape = read_idx_shaped(images)
        labels = raw / f"{prefix}-labels-idx1-ubyte"
        y = read_idx_shaped(labels)[0][:lim] if labels.is_file() else None
        splits.append(make_split(limited(x, lim, str(images)), y, 255.0, device, f"{raw} {prefix}"))
    return splits[0], splits[1], shape


def load_mnist(raw: Path, device: torch.device, limit: int | None = None, test_limit: int | None = None,
               binarize: str = "none", binarize_seed: int = 0) -> Dataset:
    """The four IDX files in `raw` as a Dataset on `device`, ready for index slicing."""
    train, test, shape = load_idx_splits(raw, device, limit, test_limit)
    return finish_dataset(train, test, shape, binarize, binarize_seed, f"IDX files in {raw}")
