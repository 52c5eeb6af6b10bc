"""Sweeps and runs that survive: failed jobs, signals, and re-runs that skip or resume.

Each test drives the real command line in a subprocess over the fixture data and reads the MLflow
store back, as a user would see it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.survival_helpers import (  # noqa: F401 - fixtures are found by name
    base_args, experiment, histories, runs_of, slow_mnist, start, stop_after, store, vaelab,
)

pytestmark = pytest.mark.slow


RESUMED = ("trainer.epochs=4", "trainer.seed=7")  # the config interrupted and resumed below


@pytest.fixture(scope="module")
def uninterrupted(slow_mnist: Path, store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Per-epoch metrics of the resumed config trained without interruption, in its own experiment."""
    home = tmp_path_factory.mktemp("reference_home")
    out = vaelab(*base_args(slow_mnist, store, *RESUMED, experiment="uninterrupted"), home=home)
    assert out.returncode == 0, out.stderr[-2000:]
    [run] = runs_of(store, "uninterrupted")
    return histories(store, run.info.run_id)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_interrupted_run_resumes_into_the_same_run_bit_identically(tmp_path, slow_mnist, store, experiment, signum,
                                                                    uninterrupted):
    args = base_args(slow_mnist, store, *RESUMED, experiment=experiment)

    out, err = stop_after(start(*args, home=tmp_path / "home"), "epoch   2/4", signum)
    [stopped] = runs_of(store, experiment)
    if signum == signal.SIGTERM:  # a signal the run sees: KILLED, one line, 143, checkpoint kept
        assert stopped.info.status == "KILLED"
        assert err.strip().splitlines()[-1].startswith("vaelab: stopped by SIGTERM")
        assert "Traceback" not in err
    else:  # a lost machine: the run stays RUNNING with no live process
        assert stopped.info.status == "RUNNING"

    again = vaelab(*args, home=tmp_path / "home")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming run {stopped.info.run_id} after epoch" in again.stdout
    [resumed] = runs_of(store, experiment)
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    got = histories(store, resumed.info.run_id)
    assert got == uninterrupted  # bit-identical, every epoch logged exactly once
    assert [s for s, _ in got["test/loss"]] == [1, 2, 3, 4]

    done = vaelab(*args, home=tmp_path / "home")  # the third time there is nothing left to do
    assert done.returncode == 0 and "already finished: run " + resumed.info.run_id in done.stdout
    assert "epoch   1/4" not in done.stdout


def test_a_sweep_goes_on_past_a_failing_job_and_reports_it(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=2", "data.limit=300", experiment=experiment)
    out = vaelab("--multirun", *args, "optimizer.lr=1e30,1e-3", home=tmp_path / "home")
    assert out.returncode == 1, out.stderr[-2000:]
    assert "sweep of 2 jobs: 1 failed, 1 finished" in out.stdout
    assert "optimizer.lr=1e+30" in out.stdout and "DivergenceError" in out.stdout
    runs = runs_of(store, experiment)
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId")),
                      key=lambda r: r.data.tags["hydra.job.num"])
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FAILED", "FINISHED"]
    assert "non-finite" in children[0].data.tags["error"]

    again = vaelab("--multirun", *args, "optimizer.lr=1e30,1e-3", home=tmp_path / "home")
    assert again.returncode == 1  # the diverging config is not retried unless asked
    assert "failed before in run" in again.stderr and "already finished" in again.stdout
    runs = runs_of(store, experiment)
    assert len(runs) == 3, "a re-run sweep reuses its parent and its children"


def test_a_parallel_sweep_keeps_its_healthy_jobs(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=2", "data.limit=300", experiment=experiment)
    out = vaelab("--multirun", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *args,
                 "optimizer.lr=1e30,1e-3,2e-3", home=tmp_path / "home")
    assert out.returncode == 1, out.stderr[-2000:]
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED", "FINISHED"]
    assert "sweep of 3 jobs: 1 failed, 2 finished" in out.stdout


def test_an_optuna_study_sees_failed_trials_and_goes_on(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=1", "data.limit=200", experiment=experiment)
    out = vaelab("--multirun", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=0",
                 *args, "optimizer.lr=choice(1e30,1e-3)", home=tmp_path / "home")
    assert "sweep of 4 jobs" in out.stdout and "Best value" in out.stderr + out.stdout, out.stderr[-3000:]
    # two choices, four trials: a config proposed again is skipped and its loss handed back
    statuses = [r.info.status for r in runs_of(store, experiment) if r.data.tags.get("mlflow.parentRunId")]
    assert sorted(statuses) == ["FAILED", "FINISHED"]
    assert out.returncode == 1


def test_sigterm_on_a_sweep_kills_parent_and_child(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=4", experiment=experiment)
    out, err = stop_after(start("--multirun", *args, "trainer.seed=1,2", home=tmp_path / "home"),
                          "epoch   1/4", signal.SIGTERM)
    runs = runs_of(store, experiment)
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # the parent and job 0
    assert "vaelab: stopped by SIGTERM" in err and "Traceback" not in err
