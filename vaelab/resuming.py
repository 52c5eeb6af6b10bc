"""What a re-run does with an earlier run of its config: the plan (skip, continue, refuse), the
checkpoint to continue from, the epochs the store missed, and `Spool`, what a run keeps locally."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.checkpoint import TrainingState
from vaelab.checkpoint import load as load_checkpoint
from vaelab.checkpoint import save as save_checkpoint
from vaelab.errors import CheckpointError, ConfigError, PreviousFailure, ResourceError
from vaelab.signals import deferred
from vaelab.tracking import NullTracker, PastRun


class Busy(Exception):
    """The config is held by another process (`Spool.only_one(wait=False)`); the message names it."""


@dataclass
class ResumePlan:
    past: PastRun | None  # the run to continue (None: a new run)
    skip: bool = False  # it finished: report it, train nothing


def plan_resume(past: PastRun | None, resume: bool, retry_failed: bool) -> ResumePlan:
    """What to do with an earlier run of the same config: skip it if it finished, continue it if
    it was interrupted (by a signal, a lost store or a lost machine), refuse to repeat a real
    error unless asked, and never touch a run whose process is still alive."""
    if past is None or not resume:
        return ResumePlan(None)
    if past.status == "FINISHED":
        return ResumePlan(past, skip=True)
    if past.status == "RUNNING" and past.process_alive():
        raise ConfigError(f"run {past.run_id} of this config is still running (pid {past.pid}); "
                          "wait for it, or use trainer.resume=false for a separate run")
    if past.status == "FAILED" and past.failure == "error" and not retry_failed:
        raise PreviousFailure(f"this config failed before in run {past.run_id} ({past.error or 'no message'}); "
                              "trainer.retry_failed=true runs it again")
    return ResumePlan(past)


def find_checkpoint(spool: Spool, tracker: NullTracker, past: PastRun | None,
                    restart: bool = False) -> dict[str, Any] | None:
    """The newest readable checkpoint of the run to continue: the local copy or the one among its
    artifacts; one that cannot be read is passed over, in one line. A local checkpoint whose run
    the store does not have (the store was lost or is new) continues in a new run. When every copy
    is unreadable, `restart` trains the same run again from epoch 0; without it, that is an error."""
    found, broken = [], []

    def read(where: str, fetch: Callable[[], Path | None]) -> None:
        try:
            path = fetch()
            if path is not None and path.is_file():
                found.append((load_checkpoint(path), where))
        except CheckpointError as err:
            broken.append(f"the {where} cannot be read ({err.reason or err})")

    read("local checkpoint", lambda: spool.path)
    found = [(c, w) for c, w in found if past is None or c.get("run_id") == past.run_id]
    with tempfile.TemporaryDirectory() as tmp:
        read("store's checkpoint", lambda: tracker.fetch_checkpoint(past.run_id, Path(tmp)) if past else None)
        best = max(found, key=lambda cw: cw[0]["epoch"], default=None)
    for line in broken:
        print(f"vaelab: {line}", flush=True)
    if best is not None and broken:
        print(f"vaelab: resuming from the {best[1]} (epoch {best[0]['epoch']})", flush=True)
    if best is None and broken and not restart:
        raise CheckpointError(f"no checkpoint of run {past.run_id if past else '(new)'} can be read; "
                              "trainer.restart=true trains it again from epoch 0, into the same run")
    return best[0] if best is not None else None


def replay_history(tracker: NullTracker, resume: dict[str, Any] | None, past: PastRun | None) -> set[int]:
    """Log the epochs a checkpoint holds but the store missed (it was down); return the epochs
    the store already has, which the resumed run must not log twice."""
    logged = set(past.logged_epochs) if past else set()
    for epoch, metrics in enumerate(resume["history"] if resume else [], start=1):
        if epoch not in logged:
            tracker.log_metrics(metrics, step=epoch)
            logged.add(epoch)
    return logged


class Spool:
    """What a run keeps locally, in vaelab's home, keyed by the config's identity and store: its
    latest checkpoint (one file) and the outbox of pictures its store could not take."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "last.pt"
        self.outbox = folder / "outbox"

    @contextlib.contextmanager
    def only_one(self, wait: bool = True) -> Iterator[None]:
        """Hold this config for this process: another process running it makes this one wait
        (it then finds the run finished, or resumes it), or, without `wait`, raise `Busy`."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.folder.with_name(self.folder.name + ".lock"), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                if not wait:
                    raise Busy(holder) from None
                print(f"vaelab: the same config is running in {holder}; waiting for it to end", flush=True)
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when that process ends, however it ends
            lock.truncate(0)
            lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
            lock.flush()
            yield

    def save(self, state: TrainingState, *, tracker: NullTracker, every: int, last: int,
             run_id: Callable[[], str | None], identity: str) -> None:
        """Checkpoint every `every` epochs and at the last; a signal cannot cut the write short."""
        if not every or (state.epoch % every and state.epoch != last):
            return
        with deferred():
            try:
                save_checkpoint(state.state_dict(run_id=run_id(), identity=identity), self.path)
            except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
                cause = err if isinstance(err, OSError) else err.__context__
                if not isinstance(cause, OSError):
                    raise
                raise ResourceError(f"the checkpoint {self.path} could not be written ({cause.strerror}); "
                                    "free some space and run the same command again to resume") from None
            tracker.log_checkpoint(self.path, state.epoch)

    def clear(self) -> None:
        if self.path.parent.is_dir():
            shutil.rmtree(self.path.parent, ignore_errors=True)
