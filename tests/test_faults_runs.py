"""A run under a real cluster's faults (issue 15, rows 1, 2, 4, 5, 8 and 11): a home on another
filesystem, the same config twice at once, a signal in the wrap-up or mid-run, a disk that fills.

Each test drives the real command line over the fixture data and reads the store back.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.survival_helpers import (  # noqa: F401 - fixtures are found by name
    base_args, experiment, histories, runs_of, slow_mnist, start, stop_after, store, vaelab,
)

pytestmark = pytest.mark.slow
SMALL = ("model.hidden_dim=32", "trainer.eval_batch_size=200")  # a checkpoint of ~0.2 MB


def steps_logged_once(home: Path, run_id: str) -> None:
    """No metric of the run has a step twice."""
    for key, history in histories(home, run_id).items():
        steps = [s for s, _ in history]
        assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {steps}"


def test_a_home_on_another_filesystem_than_tmp_finishes_with_its_model(tmp_path, slow_mnist):
    """Row 1: the checkpoint upload hard-linked the home's file into $TMPDIR, which fails across
    filesystems: every run failed after 2 minutes, RUNNING, without a model."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(os.environ.get("TMPDIR", "/tmp")).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than $TMPDIR")
    home = Path(tempfile.mkdtemp(dir=shm, prefix="vaelab-home-"))
    try:
        args = [a for a in base_args(slow_mnist, home, "trainer.epochs=2", "tracking.patience_s=2", *SMALL)
                if a != "tracking.log_model=false"]
        out = vaelab(*args, home=home)
        assert out.returncode == 0, out.stderr[-2000:]
        [run] = runs_of(home)
        assert run.info.status == "FINISHED" and run.outputs.model_outputs
        client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
        assert [f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/last.pt"]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_same_config_started_twice_at_once_trains_once(tmp_path, slow_mnist):
    """Row 2: both trained, the first cleared the shared checkpoint folder and the second failed,
    RUNNING; the store ended with two runs of one identity."""
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=2", *SMALL)
    vaelab(*args, "trainer.epochs=1", home=home)  # the store exists, so both start at once
    first, second = start(*args, home=home), start(*args, home=home)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [e[-1000:] for _, e in outs]
    trained = [o for o, _ in outs if "epoch   1/2" in o]
    waited = [o for o, _ in outs if "waiting for it to end" in o]
    assert len(trained) == 1 and len(waited) == 1, outs
    assert "already finished: run" in waited[0]
    runs = [r for r in runs_of(home) if r.data.params.get("trainer.epochs") == "2"]
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_a_signal_in_the_wrap_up_never_leaves_a_run_running_nor_logs_twice(tmp_path, slow_mnist):
    """Row 4: SIGTERM right after `final test loss` exited 143 with the run RUNNING; its re-run
    logged the final metrics a second time at the same step, and a second model."""
    home = tmp_path / "home"
    args = [a for a in base_args(slow_mnist, home, "trainer.epochs=2", *SMALL) if a != "tracking.log_model=false"]
    proc = start(*args, home=home)
    _, err = stop_after(proc, "final test loss", signal.SIGTERM)
    assert proc.returncode == 143, err[-2000:]
    [stopped] = runs_of(home)
    assert stopped.info.status in ("KILLED", "FINISHED")  # FINISHED: the signal came after the end
    again = vaelab(*args, home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    [run] = runs_of(home)
    assert run.info.status == "FINISHED" and run.info.run_id == stopped.info.run_id
    steps_logged_once(home, run.info.run_id)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    for key in ("time/startup_s", "time/total_s"):  # timings too: one row each, the first run's
        assert len(client.get_metric_history(run.info.run_id, key)) == 1, key
    assert len(run.outputs.model_outputs) == 1


def test_a_run_stopped_mid_training_has_every_finished_epoch_in_the_store(tmp_path, slow_mnist):
    """Rows 8 and 11: a run stopped by SIGTERM after 3 epochs showed no metric until resumed
    (its queued calls were dropped), and runs printed `a message from the logging process was lost`."""
    home = tmp_path / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=6", "trainer.images_every=1", *SMALL)
    proc = start(*args, home=home)
    _, err = stop_after(proc, "epoch   3/6", signal.SIGTERM)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1].startswith("vaelab: stopped by SIGTERM"), err
    assert "Traceback" not in err and "was lost" not in err and len(err.strip().splitlines()) == 1, err
    [run] = runs_of(home)
    assert run.info.status == "KILLED"
    assert [s for s, _ in histories(home, run.info.run_id)["test/loss"]][:3] == [1, 2, 3]


def mount_tmpfs(disk: Path, options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: the full-disk and read-only home tests must run")
        pytest.skip("mounting a small tmpfs needs root")
    disk.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:  # a container without the right to mount
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()[:200]}")


def test_a_read_only_home_is_one_line(tmp_path, slow_mnist):
    """A home that cannot be written (even by root: a read-only filesystem) was a traceback, then
    'free some space', which is not what is wrong."""
    home = tmp_path / "readonly"
    mount_tmpfs(home, "ro,size=1m")
    try:
        out = vaelab(*base_args(slow_mnist, home, "trainer.epochs=1"), home=home)
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        f"vaelab: error: Read-only file system: {home}/hydra; vaelab's home ({home}) must be writable: fix it, "
        "or set VAELAB_HOME to a folder you can write"], out.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs, mounted as root (CI runs as root), unmounted whatever happens."""
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=24m")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_that_fills_mid_run_is_one_line_and_the_same_command_resumes(small_disk, slow_mnist):
    """Row 5: exit 1 with 287 lines, 11 tracebacks and `--- Logging error ---`, the run RUNNING."""
    home = small_disk / "home"
    args = base_args(slow_mnist, home, "trainer.epochs=4", "tracking.patience_s=1", *SMALL)
    proc = start(*args, home=home)
    filler = small_disk / "filler"
    for line in proc.stdout:
        # After epoch 2's line: epoch 1's checkpoint is on disk (it is written after epoch 1's line,
        # before epoch 2 trains), so there is one to resume from whatever the full disk cuts next.
        if line.startswith("epoch   2/4"):
            with open(filler, "wb") as f:  # the disk fills up
                try:
                    while True:
                        f.write(b"\0" * (1 << 20))
                except OSError:
                    pass
            break
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (1, 2), err[-3000:]
    assert "Traceback" not in err and "Logging error" not in err, err[-3000:]
    assert len(err.strip().splitlines()) <= 3, err
    assert "space" in err.lower()
    [stopped] = runs_of(home)
    assert stopped.info.status in ("FAILED", "RUNNING")  # RUNNING: the store itself could not be written
    filler.unlink()  # space is freed
    again = vaelab(*args, home=home)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming run" in again.stdout
    [run] = runs_of(home)
    assert run.info.status == "FINISHED" and run.info.run_id == stopped.info.run_id
    assert [s for s, _ in histories(home, run.info.run_id)["test/loss"]] == [1, 2, 3, 4]
