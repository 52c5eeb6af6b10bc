"""Shared fixtures: tiny MNIST-format IDX files, composed configs, a temporary MLflow store."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path


import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from vaelab.config import register_configs
from vaelab.paths import config_dir
from vaelab.data import raw_dir, write_idx_images, write_idx_labels

N_TRAIN, N_TEST = 200, 60
register_configs()  # the schemas the configs' defaults lists name


def pytest_configure(config: pytest.Config) -> None:
    """`make test` runs two test files at once (-n 2), and most tests run vaelab commands: with
    torch's default of a thread per core in each, two commands on 2 cores oversubscribe them and
    OpenMP's waiting threads burn what the other needs (the suite took 9:43 against 7:52 with a
    thread per command). The cores are shared out among the workers, as vaelab shares them among
    a sweep's parallel jobs; the workers, started later, inherit it; OMP_NUM_THREADS set by hand wins."""
    if "OMP_NUM_THREADS" not in os.environ and not hasattr(config, "workerinput"):
        workers = config.getoption("numprocesses", None) or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(workers)))


def write_fake_mnist(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> dict[str, str]:
    """Write four small IDX files in torchvision's layout; return their md5 sums.

    Each "digit" is a class-specific bright square plus noise, so a VAE has something to learn.
    """
    rng = np.random.default_rng(seed)
    raw = raw_dir(root)
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, d in enumerate(labels):
            r, c = divmod(int(d), 4)
            images[i, 2 + 8 * r : 8 + 8 * r, 2 + 6 * c : 8 + 6 * c] = 255
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8))
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(raw.iterdir())}


def write_fake_gz(root: Path, folder: str, seed: int = 1) -> dict[str, str]:
    """Fixture files as torchvision leaves them for Fashion-MNIST and KMNIST: only the four .gz
    archives in <root>/<folder>/raw; returns their md5 sums."""
    tmp = root / f".{folder}-plain"
    write_fake_mnist(tmp, seed=seed)
    raw = raw_dir(root, folder)
    raw.mkdir(parents=True, exist_ok=True)
    for plain in raw_dir(tmp).iterdir():
        (raw / f"{plain.name}.gz").write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(raw.iterdir())}


def write_fake_npz(path: Path, labels: bool = True, shape: tuple[int, ...] = (1, 28, 28)) -> Path:
    """A user's .npz: uint8 x_train (80, *shape), x_test (20, *shape), labels optional."""
    rng = np.random.default_rng(2)
    arrays = {"x_train": rng.integers(0, 256, (80, *shape), dtype=np.uint8),
              "x_test": rng.integers(0, 256, (20, *shape), dtype=np.uint8)}
    if labels:
        arrays |= {"y_train": np.arange(80) % 10, "y_test": np.arange(20) % 10}
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session", autouse=True)
def no_default_store() -> None:
    """A store MLflow makes where nobody asked (its default, ./mlflow.db or ./mlruns, in the folder
    the tests run from) means something used MLflow without vaelab's explicit tracking URI."""
    strays = [Path.cwd() / name for name in ("mlflow.db", "mlruns")]
    before = {p for p in strays if p.exists()}
    yield
    made = [str(p) for p in strays if p.exists() and p not in before]
    assert not made, f"MLflow's default store was created: {made}"


@pytest.fixture(scope="session", autouse=True)
def vaelab_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Everything vaelab writes by default (store, Hydra folders, checkpoints) goes to a temporary
    home, never into the checkout's runs/."""
    home = tmp_path_factory.mktemp("vaelab_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VAELAB_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fixture MNIST, Fashion-MNIST and KMNIST (as .gz) under one root, as torchvision lays them out."""
    root = tmp_path_factory.mktemp("mnist")
    write_fake_mnist(root)
    for folder in ("FashionMNIST", "KMNIST"):
        write_fake_gz(root, folder)
    return root


@pytest.fixture(scope="session")
def npz_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_npz(tmp_path_factory.mktemp("npz") / "images.npz")


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store for the session (creating one costs seconds); tests use own experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


LOCAL_DATA = ("data=idx", "data=npz")  # a user's files: data.path instead of data.root


def tiny_overrides(root: Path, *extra: str) -> list[str]:
    """Overrides that make any config run in a second on the fixture data."""
    local = any(e in LOCAL_DATA for e in extra)
    return [
        *([] if local else [f"data.root={root}", "data.verify=false"]),
        "trainer.epochs=1",
        "trainer.batch_size=32",
        "trainer.progress=false",
        "tracking=none",
        *extra,
    ]


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def tiny_cfg(mnist_root: Path):
    """compose_config with the tiny overrides applied first."""
    return lambda *extra: compose_config(*tiny_overrides(mnist_root, *extra))


@pytest.fixture
def tracked_cfg(mnist_root: Path, mlflow_uri: str, tmp_path: Path, request: pytest.FixtureRequest):
    """A config tracked into the session store, in an experiment of the test's own."""
    safe_name = re.sub(r"[^\w.-]", "_", request.node.name)

    def make(*extra: str) -> DictConfig:
        return compose_config(*tiny_overrides(
            mnist_root,
            "tracking=mlflow",
            f"tracking.uri={mlflow_uri}",
            f"tracking.experiment={safe_name}",
            f"tracking.artifact_location={tmp_path / 'artifacts'}",
            *extra,
        ))
    return make
