"""What the survival tests share: fixture data big enough to interrupt, one store, the CLI.

Each test drives the real command line in a subprocess over the fixture data and reads the MLflow
store back, as a user would see it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import write_fake_mnist

TIMED = ("time/",)  # wall-clock metrics differ between any two runs


@pytest.fixture(scope="module")
def slow_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough images that an epoch lasts long enough to be interrupted in the middle."""
    root = tmp_path_factory.mktemp("mnist_survival")
    write_fake_mnist(root, n_train=3000, n_test=200)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module (a new one costs seconds of migrations); tests that need a
    store of their own (lost, locked, unwritable) make it themselves."""
    return tmp_path_factory.mktemp("survival_store")


@pytest.fixture
def experiment(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^\w.-]", "_", request.node.name)


def base_args(root: Path, home: Path, *extra: str, experiment: str = "vaelab") -> list[str]:
    return [f"data.root={root}", "data.verify=false", "trainer.batch_size=32", "trainer.progress=false",
            "trainer.images_every=0", "tracking.log_model=false", f"tracking.experiment={experiment}",
            f"tracking.uri=sqlite:///{home / 'mlflow.db'}", f"tracking.artifact_location={home / 'artifacts'}",
            *extra]


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "VAELAB_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def vaelab(*args: str, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaelab", *args], cwd=home.parent, capture_output=True,
                          text=True, timeout=timeout, env=env_for(home))


def start(*args: str, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vaelab", *args], cwd=home.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(home))


def stop_after(proc: subprocess.Popen, line_start: str, signum: int) -> tuple[str, str]:
    """Send `signum` as soon as a stdout line starts with `line_start`; return all output."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.lstrip().startswith(line_start):
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=60)
    return "".join(seen) + out, err


def runs_of(home: Path, experiment: str = "vaelab") -> list:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def histories(home: Path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith(TIMED)]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}
