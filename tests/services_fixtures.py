"""Helpers for the tests that start real services (marked `server` and `slurm`): skipping where a
service cannot run, folders its daemon users may enter, the real CLI in a subprocess, reading a
sweep back from MLflow."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import tiny_overrides


def need(reason: str | None) -> None:
    """Skip with a one-line reason where a service cannot run here. CI installs every service
    (.ci/run), so there (CI set) a missing one fails instead of skipping silently."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this test (.ci/run installs the packages)")
    pytest.skip(reason)


@contextlib.contextmanager
def shared_tmpdir(prefix: str) -> Iterator[Path]:
    """A temporary folder that daemon users (postgres, munge) may enter; pytest's own tmp folders
    are private to the user running the tests (mode 700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tracked_overrides(data_root: Path, uri: str, experiment: str, *extra: str) -> list[str]:
    """The tiny overrides, tracked into `uri` (one experiment per test), fast: no model, images at the end."""
    return [
        *(a for a in tiny_overrides(data_root) if a != "tracking=none"),
        "tracking=mlflow", f"tracking.uri={uri}", f"tracking.experiment={experiment}",
        "tracking.log_model=false", "trainer.images_every=0", *extra,
    ]


def vaelab_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaelab", *args]


def run_vaelab(*args: str, cwd: Path, env: Mapping[str, str] | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(vaelab_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def sweep_runs(uri: str, experiment: str) -> tuple[object, list]:
    """The one sweep parent of `experiment` and its children, by job number."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1, [(r.info.run_name, r.info.status) for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1, "every other run is nested under the parent"
    return parents[0], sorted(children, key=lambda r: int(r.data.tags.get("hydra.job.num", 0)))
