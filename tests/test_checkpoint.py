"""Checkpoints: atomic, readable with weights_only, and a restored state trains on bit for bit."""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import time
import traceback

import pytest
import torch

from vaelab import checkpoint
from vaelab.resuming import plan_resume
from vaelab.checkpoint import TrainingState
from vaelab.data import load_mnist, raw_dir
from vaelab.errors import CheckpointError, ConfigError, PreviousFailure
from vaelab.models import MLPVAE
from vaelab.objectives import ELBO
from vaelab.signals import Interrupted, deferred, handle_signals
from vaelab.tracking import PastRun
from vaelab.train import fit


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = MLPVAE(input_dim=784, hidden_dim=32, latent_dim=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def train(data, epochs: int, resume=None, keep=None):
    model, optimizer, scheduler = make()
    kept = {}

    def on_checkpoint(state: TrainingState) -> None:
        kept[state.epoch] = state.state_dict(run_id="r", identity="i")

    metrics = fit(model, optimizer, data, scheduler=scheduler, epochs=epochs, batch_size=32, eval_batch_size=100,
                  objective=ELBO(), seed=3, progress=False, resume=resume, on_checkpoint=on_checkpoint)
    if keep is not None:
        keep.update(kept)
    return metrics, model


def test_a_restored_state_trains_on_exactly_as_if_never_stopped(mnist_root, tmp_path):
    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"))
    whole, whole_model = train(data, epochs=3)
    kept: dict = {}
    train(data, epochs=1, keep=kept)
    checkpoint.save(kept[1], tmp_path / "last.pt")
    resumed, resumed_model = train(data, epochs=3, resume=checkpoint.load(tmp_path / "last.pt"))
    assert {k: v for k, v in resumed.items() if not k.startswith("time/")} == \
        {k: v for k, v in whole.items() if not k.startswith("time/")}
    for a, b in zip(whole_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)


def test_a_checkpoint_from_a_gpu_resumes_on_a_cpu(mnist_root, tmp_path, capsys):
    """A run checkpointed on a GPU and resumed on a CPU (or the reverse) goes on: the model and
    optimizer are restored, the batch generator, whose state cannot cross devices, is reseeded
    from the saved one (the same on every such resume), and one line says so."""
    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"))
    kept: dict = {}
    train(data, epochs=1, keep=kept)
    gpu_like = kept[1] | {"rng": kept[1]["rng"] | {
        "batches": torch.arange(16, dtype=torch.uint8),  # a CUDA generator's state: seed and offset
        "cuda": [torch.arange(16, dtype=torch.uint8)] * (torch.cuda.device_count() + 1),
    }}
    checkpoint.save(gpu_like, tmp_path / "last.pt")
    first, first_model = train(data, epochs=2, resume=checkpoint.load(tmp_path / "last.pt"))
    said = capsys.readouterr().out
    assert "resume: the checkpoint was taken on another kind of device than cpu" in said
    assert "resume: CUDA's random state was saved on a GPU this machine lacks" in said
    again, _ = train(data, epochs=2, resume=checkpoint.load(tmp_path / "last.pt"))
    assert first["test/loss"] == again["test/loss"] and math.isfinite(first["test/loss"])
    whole, _ = train(data, epochs=2)
    assert first["train/loss"] != whole["train/loss"]  # another batch order, as the note says
    assert first["train/loss"] < kept[1]["history"][0]["train/loss"]  # epoch 2 learnt on epoch 1's model


def test_a_checkpoint_holds_every_state_and_loads_with_weights_only(mnist_root, tmp_path):
    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"))
    kept: dict = {}
    train(data, epochs=2, keep=kept)
    checkpoint.save(kept[2], tmp_path / "last.pt")
    loaded = torch.load(tmp_path / "last.pt", weights_only=True)
    assert loaded["epoch"] == 2 and loaded["run_id"] == "r" and loaded["identity"] == "i"
    assert {"model", "optimizer", "scheduler", "rng", "history"} <= loaded.keys()
    assert {"torch", "batches", "cuda"} == loaded["rng"].keys()
    assert [sorted(m) for m in loaded["history"]][0] == sorted(kept[1]["history"][0])


def test_saving_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    checkpoint.save({"format": checkpoint.FORMAT, "epoch": 1}, target)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save({"format": checkpoint.FORMAT, "epoch": 2}, target)
    assert checkpoint.load(target)["epoch"] == 1  # the old checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no half-written leftovers


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="trainer.restart=true"):
        checkpoint.load(tmp_path / "last.pt")


def past(status: str, **kw) -> PastRun:
    return PastRun(run_id="abc", status=status, name="n", **kw)


def test_what_a_rerun_does_with_an_earlier_run():
    assert plan_resume(None, resume=True, retry_failed=False).past is None
    assert plan_resume(past("FINISHED"), resume=True, retry_failed=False).skip
    assert plan_resume(past("FINISHED"), resume=False, retry_failed=False).past is None  # fresh
    assert plan_resume(past("KILLED"), resume=True, retry_failed=False).past.run_id == "abc"
    dead = past("RUNNING", host=socket.gethostname(), pid=2**22 + 12345)
    assert plan_resume(dead, resume=True, retry_failed=False).past is dead
    with pytest.raises(ConfigError, match="still running"):
        plan_resume(past("RUNNING", host=socket.gethostname(), pid=os.getpid()), resume=True, retry_failed=False)
    with pytest.raises(PreviousFailure, match="retry_failed=true"):
        plan_resume(past("FAILED", failure="error"), resume=True, retry_failed=False)
    assert plan_resume(past("FAILED", failure="error"), resume=True, retry_failed=True).past.run_id == "abc"


def test_a_signal_inside_a_deferred_section_is_raised_at_its_end():
    steps = []
    with handle_signals(), pytest.raises(Interrupted) as caught:
        with deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            steps.append("finished the write")
        steps.append("never")
    assert steps == ["finished the write"]
    assert caught.value.exit_code == 143 and caught.value.name == "SIGTERM"



def test_a_signal_that_arrives_inside_logging_is_raised_after_it_and_leaks_no_lock():
    """Python 3.11's logging takes its lock outside the try that frees it: SIGTERM raised there
    leaked the lock, the tracking thread blocked on it, and the command hung at exit."""
    class Kill(logging.Handler):
        def emit(self, record):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # bytecodes, at each of which the old handler raised
                pass

    log = logging.getLogger("vaelab.test.signal_in_logging")
    log.addHandler(Kill())
    log.propagate = False
    steps = []
    try:
        with handle_signals(), pytest.raises(Interrupted) as caught:
            log.warning("a line")
            steps.append("logged")
            time.sleep(2)
            steps.append("never")
    finally:
        log.handlers.clear()
    assert steps == ["logged"]
    assert caught.value.name == "SIGTERM"
    assert not [f for f in traceback.extract_tb(caught.value.__traceback__) if "logging" in f.filename]
    assert logging._lock.acquire(blocking=False)  # nobody holds logging's lock
    logging._lock.release()


def test_a_signal_pending_in_logging_when_the_handled_section_ends_is_raised_not_lost():
    class Kill(logging.Handler):
        def emit(self, record):
            os.kill(os.getpid(), signal.SIGINT)

    log = logging.getLogger("vaelab.test.signal_at_the_end")
    log.addHandler(Kill())
    log.propagate = False
    try:
        with pytest.raises(Interrupted) as caught, handle_signals():
            log.warning("the last line")  # the retry is 5 ms away: the section ends first
    finally:
        log.handlers.clear()
    assert caught.value.exit_code == 130
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL)[0] == 0


class StoreCopy:
    """A tracker whose store holds `content` as the run's checkpoint."""

    def __init__(self, content: bytes | None) -> None:
        self.content = content

    def fetch_checkpoint(self, run_id, dest):
        if self.content is None:
            return None
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "last.pt").write_bytes(self.content)
        return dest / "last.pt"


def test_resume_takes_the_readable_copy_and_says_so_and_restart_keeps_the_run(tmp_path, capsys):
    """A corrupt local checkpoint stopped the run with advice (trainer.resume=false) that orphaned it,
    although the store's copy was good."""
    from vaelab.resuming import Spool, find_checkpoint

    model, optimizer, scheduler = make()
    good = TrainingState(model, optimizer, scheduler, torch.Generator(), epoch=3).state_dict(run_id="abc")
    checkpoint.save(good, tmp_path / "good.pt")
    spool = Spool(tmp_path / "spool")
    spool.path.parent.mkdir()
    spool.path.write_bytes(b"corrupt")
    found = find_checkpoint(spool, StoreCopy((tmp_path / "good.pt").read_bytes()), past("KILLED"))
    assert found["epoch"] == 3
    out = capsys.readouterr().out
    assert "the local checkpoint cannot be read" in out and "resuming from the store's checkpoint (epoch 3)" in out

    with pytest.raises(CheckpointError, match="no checkpoint of run abc can be read; trainer.restart=true"):
        find_checkpoint(spool, StoreCopy(b"also corrupt"), past("KILLED"))
    assert find_checkpoint(spool, StoreCopy(b"also corrupt"), past("KILLED"), restart=True) is None
