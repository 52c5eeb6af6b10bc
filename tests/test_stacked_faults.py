"""`hydra/launcher=stacked` when things go wrong: a member that diverges fails alone; a SIGTERM
mid-group ends every member KILLED and the same command resumes each into its own run; two shapes
make two stacks; two sweeps of the same configs at once train each once, and the second skips.
(A file of its own: `make test` runs two files at a time.)"""

from __future__ import annotations

import signal

import pytest

from tests.survival_helpers import (  # noqa: F401 - fixtures are found by name
    base_args, experiment, histories, runs_of, slow_mnist, start, stop_after, store, vaelab,
)

STACKED = "hydra/launcher=stacked"


@pytest.mark.slow
def test_a_diverging_member_fails_while_the_others_finish_in_two_stacks(tmp_path, mnist_root, store, experiment):
    """Two shapes (latent sizes 2 and 3) make two stacks; in each, the member at lr=1e30 diverges."""
    args = base_args(mnist_root, store, "trainer.epochs=2", "model.latent_dim=2,3", "optimizer.lr=0.001,1e30,0.002",
                     experiment=experiment)
    sweep = vaelab("--multirun", STACKED, *args, home=tmp_path / "home")
    assert sweep.returncode == 1, sweep.stderr[-3000:]  # a failed job fails the sweep's command
    assert "stacked launcher: jobs 0, 1, 2 train together" in sweep.stdout
    assert "stacked launcher: jobs 3, 4, 5 train together" in sweep.stdout
    assert sweep.stdout.count("stacked: 3 jobs train together") == 2
    assert "vaelab: job 1 failed: non-finite metrics at epoch 1" in sweep.stderr
    assert "vaelab: job 4 failed: non-finite metrics at epoch 1" in sweep.stderr
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("sweep") != "parent"]
    statuses = sorted((r.data.params.get("model.latent_dim"), r.data.params.get("optimizer.lr"), r.info.status)
                      for r in children)
    assert statuses == [(z, lr, status) for z in ("2", "3")
                        for lr, status in (("0.001", "FINISHED"), ("0.002", "FINISHED"), ("1e+30", "FAILED"))], statuses
    assert "Traceback" not in sweep.stderr


@pytest.mark.slow
def test_sigterm_mid_group_resumes_each_member_into_its_own_run(tmp_path, slow_mnist, store, experiment):
    args = base_args(slow_mnist, store, "trainer.epochs=3", "trainer.seed=0,1", experiment=experiment)
    proc = start("--multirun", STACKED, *args, home=tmp_path / "home")
    out, err = stop_after(proc, "[job 0] epoch   2/3", signal.SIGTERM)  # both checkpointed epoch 1
    assert proc.returncode == 143, err[-3000:]
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("sweep") != "parent"]
    assert sorted(r.info.status for r in children) == ["KILLED", "KILLED"]
    ids = {r.info.run_id for r in children}

    again = vaelab("--multirun", STACKED, *args, home=tmp_path / "home")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("resuming run ") == 2
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("sweep") != "parent"]
    assert {r.info.run_id for r in children} == ids and {r.info.status for r in children} == {"FINISHED"}
    for run in children:  # every epoch once, the wrap-up once
        got = histories(store, run.info.run_id)
        assert [s for s, _ in got["test/loss"]] == [1, 2, 3] and len(got["test/active_units"]) == 1


@pytest.mark.slow
def test_sigterm_while_a_group_opens_leaves_no_run_running(tmp_path, mnist_root, store, experiment):
    """The first member is open (its run started) when the signal comes, the second is opening:
    both end KILLED or never start, and the same command then trains both."""
    args = base_args(mnist_root, store, "trainer.epochs=1", "trainer.seed=0,1", experiment=experiment)
    proc = start("--multirun", STACKED, *args, home=tmp_path / "home")
    out, err = stop_after(proc, "startup: ", signal.SIGTERM)  # the first member's run has started
    assert proc.returncode == 143, err[-3000:]
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("sweep") != "parent"]
    assert children and {r.info.status for r in children} == {"KILLED"}, [r.info.status for r in children]
    again = vaelab("--multirun", STACKED, *args, home=tmp_path / "home")
    assert again.returncode == 0, again.stderr[-3000:]
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("sweep") != "parent"]
    assert len(children) == 2 and {r.info.status for r in children} == {"FINISHED"}


@pytest.mark.slow
def test_two_stacked_sweeps_of_the_same_configs_at_once_train_each_once(tmp_path, mnist_root, store, experiment):
    """Each member holds its config's lock while its stack trains: two sweeps of the same configs
    in the other order would each hold one lock and wait for the other's, forever. A member whose
    config is held elsewhere now runs after its stack, alone: it waits there, then skips."""
    common = base_args(mnist_root, store, "trainer.epochs=2", experiment=experiment)
    procs = [start("--multirun", STACKED, *common, seeds, home=tmp_path / "home")
             for seeds in ("trainer.seed=0,1", "trainer.seed=1,0")]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    children = [r for r in runs_of(store, experiment) if r.data.tags.get("sweep") != "parent"]
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED"]  # each config trained once
    assert sum(out.count("already finished: run ") for out, _ in outputs) == 2
