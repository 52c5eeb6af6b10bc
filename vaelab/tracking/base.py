"""The tracker interface the app and the loop call; `NullTracker` (`tracking=none`) drops every call."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from vaelab.context import RunContext  # noqa: F401 - the tracker records it; imported from here too

PARENT_ENV = "VAELAB_PARENT_RUN_ID"  # how the sweep callback hands its parent run to the jobs


@dataclass
class PastRun:
    """What the store holds of an earlier run with the same identity."""

    run_id: str
    status: str  # RUNNING, FINISHED, FAILED or KILLED
    name: str
    test_loss: float | None = None
    failure: str | None = None  # "error" when it failed for a reason a re-run would repeat
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    logged_epochs: set[int] = field(default_factory=set)  # steps of test/loss already in the store
    metric_keys: set[str] = field(default_factory=set)  # every metric it has
    has_model: bool = False
    checkpoint_epoch: int | None = None  # the epoch of its checkpoint in the store

    def process_alive(self) -> bool:
        """Whether the process that owns a RUNNING run still exists (only knowable on its host)."""
        from vaelab.signals import alive

        return self.host == socket.gethostname() and self.pid is not None and alive(self.pid)


class NullTracker:
    """The tracker interface, tracking nothing. The app calls `connect`, then `start` (a context:
    the run, ended FINISHED, FAILED or KILLED as the block ends), `log_*` while it trains, `describe`."""

    enabled = False
    run_id: str | None = None
    offline: str | None = None  # why logging stopped mid-run, if it did

    def __init__(self, **_: Any) -> None:
        pass

    def scope(self) -> str:
        """The store as a short tag: local checkpoints are filed under the identity and this."""
        return "untracked"

    def connect(self, identity: str, log_dir: Path | None = None) -> Future:
        """Reach the store and look the identity up (a future of PastRun or None); the tracking
        libraries' records go to `log_dir`/tracking.log."""
        done: Future = Future()
        done.set_result(None)
        return done

    def lookup(self, identity: str) -> PastRun | None:
        """The earlier run of this identity, read now, changing nothing in the store."""
        return None

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None, identity: str = "",
              resume: PastRun | None = None, outbox: Path | None = None) -> Iterator[NullTracker]:
        """The run, open while the block runs; `outbox`: where pictures the store could not take wait."""
        yield self

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, once: bool = False) -> None:
        """Metrics at `step`; `once`: not again for keys a resumed run already has."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None: ...
    def log_plot(self, key: str, draw: Callable[..., Any], step: int | None = None, final: bool = False) -> None: ...
    def log_dataset(self, name: str, split: Any, source: str, context: str = "training") -> None: ...
    def log_model(self, model: Any, example: np.ndarray, spec: dict[str, Any] | None = None) -> None: ...
    def log_checkpoint(self, path: Path, epoch: int) -> None: ...

    def fetch_checkpoint(self, run_id: str, dest: Path) -> Path | None:
        return None

    def describe(self) -> str:
        return "tracking is off (tracking=none): nothing was logged"
