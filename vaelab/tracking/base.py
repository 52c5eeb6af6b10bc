"""The tracker interface that the app and the loop call, and `NullTracker`, which does nothing
(`tracking=none`). `MlflowTracker` (`mlflow_run`) is the other implementation."""

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

PARENT_ENV = "VAELAB_PARENT_RUN_ID"  # how the sweep callback hands its parent run to the jobs


@dataclass
class RunContext:
    """What Hydra knows about the job that the tracker records."""

    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    job_num: int | None = None
    sweep_dir: str | None = None
    parallel_jobs: int = 1  # jobs the launcher runs at once on this machine (joblib's n_jobs)
    choices: dict[str, str] = field(default_factory=dict)  # the option of each config group: model=mlp, ...


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


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"model": {"latent_dim": 2}} -> {"model.latent_dim": 2}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def run_name(cfg: DictConfig) -> str:
    """A readable name such as mlp-h256-z2-b1.0, unless tracking.run_name sets one."""
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    m = cfg.model
    width = f"-h{m.hidden_dim}" if "hidden_dim" in m else ""  # conv models have channels instead
    return f"{m.name}{width}-z{m.latent_dim}-b{float(cfg.loss.beta)}"


class NullTracker:
    """The tracker interface, tracking nothing: every call is accepted and dropped.

    The app calls, in order: `connect` (reach the store, look the config's identity up), `start`
    (a context: the run, new or resumed, ended FINISHED, FAILED or KILLED as the block ends), the
    `log_*` calls while it trains, and `describe` for the last console line.
    """

    enabled = False
    run_id: str | None = None
    offline: str | None = None  # why logging stopped mid-run, if it did

    def __init__(self, **_: Any) -> None:
        pass

    def scope(self) -> str:
        """Where runs are looked up, as a short tag: checkpoints kept locally are filed under the
        config's identity and this, so that two stores never share one."""
        return "untracked"

    def connect(self, identity: str, log_dir: Path | None = None) -> Future:
        """Reach the store and look the identity up; the future's result is a PastRun or None.
        What the tracking libraries log goes to `log_dir`/tracking.log, not the console."""
        done: Future = Future()
        done.set_result(None)
        return done

    def lookup(self, identity: str) -> PastRun | None:
        """The earlier run of this identity, read now, changing nothing in the store."""
        return None

    @contextlib.contextmanager
    def start(self, cfg: DictConfig, context: RunContext | None = None, identity: str = "",
              resume: PastRun | None = None, outbox: Path | None = None) -> Iterator[NullTracker]:
        """The run, open while the block runs; `outbox`: where pictures that could not be logged
        wait for the next run of the same config."""
        yield self

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, once: bool = False) -> None:
        """Metrics at `step`; `once`: not again for keys a resumed run already has."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_image(self, key: str, image: np.ndarray, step: int | None = None) -> None: ...
    def log_plot(self, key: str, draw: Callable[..., Any], step: int | None = None, final: bool = False) -> None: ...
    def log_dataset(self, name: str, x: Any, source: str, context: str = "training") -> None: ...
    def log_model(self, model: Any, example: np.ndarray, spec: dict[str, Any] | None = None) -> None: ...
    def log_checkpoint(self, path: Path, epoch: int) -> None: ...

    def fetch_checkpoint(self, run_id: str, dest: Path) -> Path | None:
        return None

    def describe(self) -> str:
        return "tracking is off (tracking=none): nothing was logged"
