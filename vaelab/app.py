"""One experiment from a composed config: `run(cfg) -> final test loss`, and `Job`, one run in the
phases a launcher drives. What is built from the config is in `building`, what a run logs as it
goes in `reporting`, what a resume needs in `resuming`."""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from vaelab.building import (
    AUTOCAST, build, build_model, build_objective, build_optimizer, build_scheduler, prepare_data, resolve_device,
)
from vaelab.checkpoint import TrainingState
from vaelab.config import validate
from vaelab.data import Dataset
from vaelab.identity import config_identity
from vaelab.paths import home
from vaelab.reporting import Lap, Probe, finish, log_datasets, log_epoch_images, report_epoch, report_startup
from vaelab.resuming import Spool, find_checkpoint, plan_resume, replay_history
from vaelab.summary import model_summary
from vaelab.tracking import NullTracker, PastRun, RunContext
from vaelab.train import fit


@dataclass
class Outcome:
    """How a run ended: its final test loss, its MLflow run (if tracked), and what happened."""

    test_loss: float
    run_id: str | None = None
    status: str = "FINISHED"  # FINISHED, SKIPPED (finished before), RESUMED (finished after a resume)


def run(cfg: DictConfig, context: RunContext | None = None) -> float:
    """Train and evaluate the configured VAE, tracking it; return the final test -ELBO (nats)."""
    return execute(cfg, context).test_loss


def execute(cfg: DictConfig, context: RunContext | None = None) -> Outcome:
    """`run`, reporting how it ended. A config that already finished is not trained again, and
    an interrupted one continues from its last checkpoint, into the same MLflow run."""
    with Job(cfg, context) as job:
        done = job.open()
        if done is not None:
            return done
        cfg = job.cfg
        metrics = fit(
            job.model, job.optimizer, job.data, scheduler=job.scheduler,
            epochs=cfg.trainer.epochs, batch_size=cfg.trainer.batch_size,
            eval_batch_size=cfg.trainer.eval_batch_size, objective=job.objective, seed=cfg.trainer.seed,
            progress=cfg.trainer.progress, progress_every=cfg.trainer.progress_every,
            autocast=AUTOCAST[cfg.trainer.precision], resume=job.resume, on_epoch_end=job.report,
            on_checkpoint=job.checkpoint,
        )
        return job.close(metrics)


class Job:
    """One run of a config, in the phases a launcher drives: `open` (the config held, the store
    reached, the resume planned, the model built, the run started), training (by `fit` alone, or
    stacked with other jobs, calling `report` and `checkpoint` after each epoch), `close` (the
    wrap-up; the run ends FINISHED). As a context, leaving it with an error ends the run FAILED
    (KILLED on a signal) and lets go of the config. `label` prefixes its console lines."""

    def __init__(self, cfg: DictConfig, context: RunContext | None = None, label: str = "") -> None:
        validate(cfg)
        self.cfg, self.context, self.label = cfg, context, label
        self.started = time.perf_counter()
        # Flush denormals to zero (FTZ/DAZ) before any CPU thread starts: they inherit the mode. Rarely
        # active pixels drive optimizer state and gradients below 1e-38, where x86 is slow; epochs grew
        # 7.4 -> 10.2 s CPU over 4 epochs of keras_seed without it, flat with it (docs/performance.md).
        torch.set_flush_denormal(True)
        self.source = build("data", cfg.data)
        self.identity = config_identity(cfg, self.source.digest())
        self.device = resolve_device(cfg.trainer.device)
        self.tracker: NullTracker = build("tracking", cfg.tracking)
        self.spool = Spool(home() / "checkpoints" / f"{self.identity}-{self.tracker.scope()}")
        self.held = contextlib.ExitStack()  # the config's lock; helper threads joined before it goes
        self.run = contextlib.ExitStack()  # the tracked run
        self.resume: dict[str, Any] | None = None  # the checkpoint it continues from

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: Any) -> bool:
        try:
            return bool(self.run.__exit__(*exc))
        finally:
            self.held.__exit__(*exc)

    def open(self, data: Dataset | None = None, wait: bool = True) -> Outcome | None:
        """Everything up to the first training step; an Outcome when there is nothing to train.
        `data`: the data set already loaded (by a stacked job of the same data). The same config
        started twice at once: the second waits, then skips; without `wait`, `resuming.Busy`."""
        cfg, context = self.cfg, self.context
        self.held.enter_context(self.spool.only_one(wait))
        log_dir = context.output_dir if context is not None and context.output_dir is not None else self.spool.folder
        lookup = self.tracker.connect(self.identity, log_dir)  # reaching the store overlaps reading the data
        # Helper threads must be idle before an error ends the process: one still importing
        # (torch._dynamo here) at interpreter exit aborts it with SIGABRT (exit 134) instead of
        # the error's own exit code.
        self.held.callback(futures.wait, [lookup])
        set_threads(cfg.trainer.threads, context)
        torch.manual_seed(cfg.trainer.seed)
        # torch.optim imports torch._dynamo on construction (2.4 s CPU): overlapped with reading the data.
        warm = threading.Thread(target=importlib.import_module, args=("torch._dynamo",), daemon=True)
        warm.start()
        self.held.callback(warm.join)
        self.data = prepare_data(self.source, self.device) if data is None else data
        plan = plan_resume(lookup.result(), cfg.trainer.resume, cfg.trainer.retry_failed)
        if plan.skip:
            return skip(plan.past)
        self.past = plan.past
        self._build()
        self._start()
        return None

    def _build(self) -> None:
        cfg, data = self.cfg, self.data
        self.model = build_model(cfg, data).to(self.device)
        self.objective = build_objective(cfg, data)
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer)
        if cfg.trainer.resume:
            self.resume = find_checkpoint(self.spool, self.tracker, self.past, restart=cfg.trainer.restart)
        else:  # a fresh run: an older local checkpoint of this config must not be resumed later
            self.spool.clear()
        # The summary's forward pass draws from torch's generator: a stacked job draws it too, and its
        # group prints it once, so that each job's random numbers are the ones it would draw alone.
        self.summary = (f"{model_summary(self.model, data.dim)}\n"
                        f"device: {self.device}; train {len(data.train):,} images, test {len(data.test):,}")
        if not self.label:
            print(self.summary)
        if self.resume is not None:
            which = f"run {self.past.run_id}" if self.past else "an interrupted run"
            print(f"{self.label}resuming {which} after epoch {self.resume['epoch']}", flush=True)

    def _start(self) -> None:
        cfg, tracker = self.cfg, self.tracker
        self.run.enter_context(tracker.start(cfg, self.context, self.identity, resume=self.past,
                                             outbox=self.spool.outbox))
        self.logged = replay_history(tracker, self.resume, self.past)
        log_datasets(tracker, cfg.data, self.data)
        self.probe = Probe.from_data(self.data, cfg.model.latent_dim, seed=cfg.trainer.seed)
        if tracker.enabled and self.resume is None and self.past is None and cfg.trainer.images_every:
            log_epoch_images(tracker, self.model, self.probe, cfg, 0)  # the untrained model: step 0, where MLflow's cards open
        self.lap, self.after = Lap(), report_startup(self.context, self.started)

    def report(self, epoch: int, metrics: dict[str, float], means: torch.Tensor | None = None) -> None:
        """After each epoch: its pictures and metrics, and its console line; `means`: the test
        set's posterior means from the epoch's test ELBO (else the pictures encode it again)."""
        report_epoch(epoch, metrics, tracker=self.tracker, model=self.model, probe=self.probe, cfg=self.cfg,
                     lap=self.lap, logged=self.logged, after=self.after, label=self.label, means=means)

    def checkpoint(self, state: TrainingState) -> None:
        self.spool.save(state, tracker=self.tracker, every=self.cfg.trainer.checkpoint_every,
                        last=self.cfg.trainer.epochs, run_id=lambda: self.tracker.run_id, identity=self.identity)

    def close(self, metrics: dict[str, float]) -> Outcome:
        """The wrap-up after the last epoch (`metrics`): evaluation, figures, the model; the run ends FINISHED."""
        cfg, tracker, resume = self.cfg, self.tracker, self.resume
        ran_last = resume is None or resume["epoch"] < cfg.trainer.epochs  # its report drew the final figures
        final = finish(tracker, self.model, self.data, cfg, self.probe, figures=not ran_last)
        tracker.log_metrics({"time/total_s": time.perf_counter() - self.started}, once=True)
        print(f"{self.label}final test loss (-ELBO): {metrics['test/loss']:.2f} nats/image" + final, flush=True)
        self.run.close()
        print(f"{self.label}{tracker.describe()}")
        self.spool.clear()  # the run is complete in the store (or was never tracked): nothing to resume
        return Outcome(metrics["test/loss"], tracker.run_id, "RESUMED" if resume is not None else "FINISHED")


def skip(past: PastRun) -> Outcome:
    loss = past.test_loss if past.test_loss is not None else math.nan
    print(f"vaelab: already finished: run {past.run_id} ({past.name}), test loss {loss:.2f} nats; "
          "trainer.resume=false trains it again", flush=True)
    return Outcome(loss, past.run_id, "SKIPPED")


def set_threads(threads: int | None, context: RunContext | None) -> None:
    """Threads per job: as configured, else the cores shared out among parallel jobs, so that
    jobs x threads never oversubscribe the machine."""
    if threads is None and context is not None and context.parallel_jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // context.parallel_jobs)
    if threads:
        torch.set_num_threads(threads)
