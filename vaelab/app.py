"""One experiment from a composed config: `run(cfg) -> final test loss`."""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LRScheduler

from vaelab.checkpoint import TrainingState
from vaelab.checkpoint import load as load_checkpoint
from vaelab.checkpoint import save as save_checkpoint
from vaelab.config import validate
from vaelab.data import Dataset, Source, default_root
from vaelab.errors import CheckpointError, ConfigError, PreviousFailure, ResourceError, VaelabError
from vaelab.identity import config_identity
from vaelab.linear_probe import probe_accuracy
from vaelab.metrics import active_units, decode, encode_means, iw_nll, kl_per_dimension, reconstruct
from vaelab.models import VAE
from vaelab.objectives import ELBO
from vaelab.summary import model_summary
from vaelab.paths import home
from vaelab.signals import deferred
from vaelab.tracking import NullTracker, PastRun, RunContext
from vaelab.train import fit

SAMPLE_GRID = 64  # random samples shown per epoch, 8 x 8
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}  # trainer.precision -> autocast dtype


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

    def open(self, data: Dataset | None = None) -> Outcome | None:
        """Everything up to the first training step; an Outcome when there is nothing to train.
        `data`: the data set already loaded (by a stacked job of the same data)."""
        cfg, context = self.cfg, self.context
        # the same config started twice at once: the second waits, then skips
        self.held.enter_context(self.spool.only_one())
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

    def report(self, epoch: int, metrics: dict[str, float]) -> None:
        """After each epoch: its pictures and metrics, and its console line."""
        report_epoch(epoch, metrics, tracker=self.tracker, model=self.model, probe=self.probe, cfg=self.cfg,
                     lap=self.lap, logged=self.logged, after=self.after, label=self.label)

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
    def only_one(self) -> Iterator[None]:
        """Hold this config for this process: another process running it makes this one wait
        (it then finds the run finished, or resumes it)."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with open(self.folder.with_name(self.folder.name + ".lock"), "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
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


def set_threads(threads: int | None, context: RunContext | None) -> None:
    """Threads per job: as configured, else the cores shared out among parallel jobs, so that
    jobs x threads never oversubscribe the machine."""
    if threads is None and context is not None and context.parallel_jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // context.parallel_jobs)
    if threads:
        torch.set_num_threads(threads)


def report_startup(context: RunContext | None, run_started: float) -> dict[str, float]:
    """Time from the command to the first training step (for a sweep's later jobs, which share
    job 0's process, from the start of the job), printed, and returned as a metric to log."""
    later_job = context is not None and context.job_num not in (None, 0)
    startup = time.perf_counter() - run_started if later_job else seconds_since_process_start()
    if startup is None:
        return {}
    print(f"startup: {startup:.2f}s from the command to the first training step")
    return {"time/startup_s": startup}


def seconds_since_process_start() -> float | None:
    """Wall time since this process started (Linux /proc), imports and interpreter start included."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks since boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - started


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; anything else must be available as named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"trainer.device={name!r} is not a device name: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but CUDA is not available here; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device={name!r} but MPS is not available here; use auto or cpu")
    return device


def prepare_data(source: Source, device: torch.device) -> Dataset:
    """The configured source (`build("data", cfg.data)`) loaded onto `device`."""
    data = source.load(device)
    print(f"data: {data.description}")
    return data


def build_model(cfg: DictConfig, data: Dataset) -> VAE:
    """The configured model around the configured likelihood, sized by the data's image shape."""
    likelihood = build("likelihood", cfg.likelihood, dim=data.dim)
    return build("model", cfg.model, image_shape=list(data.image_shape), likelihood=likelihood)


def model_spec(cfg: DictConfig, data: Dataset) -> dict[str, Any]:
    """What `build_model` needs to build this model again: logged beside its weights."""
    return {"model": OmegaConf.to_container(cfg.model, resolve=True),
            "likelihood": OmegaConf.to_container(cfg.likelihood, resolve=True),
            "image_shape": list(data.image_shape), "dim": data.dim}


def build_objective(cfg: DictConfig, data: Dataset) -> ELBO:
    """The objective (`loss`) with its KL schedule (`kl`), which knows the run's length in steps."""
    steps = math.ceil(len(data.train) / cfg.trainer.batch_size)
    kl = build("kl", cfg.kl, steps_per_epoch=steps, total_steps=steps * cfg.trainer.epochs)
    return build("loss", cfg.loss, kl=kl)


def build(group: str, node: DictConfig, *args: object, **kwargs: object):  # noqa: ANN201 - whatever _target_ names
    """Instantiate `node._target_` with its keys, `args` and `kwargs`; a failure is a one-line ConfigError."""
    try:
        return instantiate(node, _partial_=True)(*args, **kwargs)
    except VaelabError:
        raise
    except Exception as err:  # noqa: BLE001 - a bad config gets one line, not a traceback
        cause = err.__cause__ or err
        if isinstance(cause, VaelabError):  # says what is wrong itself
            raise cause from None
        raise ConfigError(f"{group} {node.get('_target_')} could not be built: {cause}") from None


def build_optimizer(opt_cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Instantiate the `_partial_` optimizer factory on the model's parameters."""
    return build("optimizer", opt_cfg, model.parameters())


def build_scheduler(sched_cfg: DictConfig, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """Instantiate the `_partial_` learning-rate scheduler factory on the optimizer."""
    return build("scheduler", sched_cfg, optimizer)


def log_datasets(tracker: NullTracker, data_cfg: DictConfig, data: Dataset) -> None:
    """The train and test images as MLflow dataset inputs, named with how many were used."""
    source = str(data_cfg.get("root") or data_cfg.get("path") or default_root())
    tracker.log_dataset(f"{data_cfg.name} train ({len(data.train):,})", data.train.x, source, "training")
    tracker.log_dataset(f"{data_cfg.name} test ({len(data.test):,})", data.test.x, source, "testing")


class Probe:
    """Fixed inputs for the pictures: one test image per class (x2), fixed sample latents, the
    image shape, and the test set (for the latent scatter)."""

    def __init__(self, originals: torch.Tensor, z_samples: torch.Tensor, image_shape: tuple[int, ...] = (1, 28, 28),
                 test_x: torch.Tensor | None = None, test_y: torch.Tensor | None = None):
        self.originals = originals  # (20, D)
        self.z_samples = z_samples  # (64, latent_dim)
        self.image_shape = image_shape  # (C, H, W) of one image, for the pictures
        self.test_x, self.test_y = test_x, test_y  # (N, D), (N,) or None without labels

    @classmethod
    def from_data(cls, data: Dataset, latent_dim: int, seed: int) -> Probe:
        x, y = data.test.x, data.test.y
        if y is None:  # no labels: the first 20 test images
            picks = list(range(min(20, len(x))))
        else:
            where = [(y == d).nonzero().flatten().tolist() for d in range(10)]
            picks = [w[0] for w in where if w] + [w[1] for w in where if len(w) > 1]  # 0-9, then 0-9
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(SAMPLE_GRID, latent_dim, generator=gen).to(x.device)
        return cls(x[picks], z, data.image_shape, x, y)


def report_epoch(epoch: int, metrics: dict[str, float], *, tracker: NullTracker, model: VAE, probe: Probe,
                 cfg: DictConfig, lap: Lap, logged: set[int], after: dict[str, float], label: str = "") -> None:
    """The epoch's pictures, then its metrics (step=epoch; not again for an epoch the store has
    from before a resume), test/loss first, then `after` (once), then its console line. MLflow's
    Compare view opens on the first metric a run logged: the objective, not `time/startup_s`."""
    every = cfg.trainer.images_every
    last = epoch == cfg.trainer.epochs
    if tracker.enabled and (last or (every and epoch % every == 0)):
        log_epoch_images(tracker, model, probe, cfg, epoch, final=last)
    metrics = metrics | {"time/wall_s": lap()}  # the epoch as the user waits for it, logging included
    if epoch not in logged:  # queued before the line is printed: a run stopped after it has them
        tracker.log_metrics({"test/loss": metrics["test/loss"], **metrics}, step=epoch)
    if after:
        tracker.log_metrics(after, once=True)  # a resumed run keeps its first
        after.clear()
    print(f"{label}epoch {epoch:>3}/{cfg.trainer.epochs}  train {metrics['train/loss']:.2f}"
          f"  test {metrics['test/loss']:.2f} (recon {metrics['test/recon']:.2f}, kl {metrics['test/kl']:.2f})"
          f"  beta {metrics['beta']:.3g}  {metrics['time/wall_s']:.1f}s", flush=True)


def log_epoch_images(tracker: NullTracker, model: VAE, probe: Probe, cfg: DictConfig, epoch: int,
                     final: bool = False) -> None:
    """The pictures of one epoch as keyed images (the UI's Image grid, with a step slider):
    reconstructions, prior samples, the test set's latent means and, for 2-D latents, the manifold.
    The last epoch's latent means and manifold are also the run's figures (`final`)."""
    from vaelab.plots import image_grid, reconstruction_grid

    shape = probe.image_shape
    tracker.log_image("reconstructions",
                      reconstruction_grid(probe.originals, reconstruct(model, probe.originals), shape=shape), epoch)
    tracker.log_image("samples", image_grid(decode(model, probe.z_samples), ncol=8, shape=shape), epoch)
    mu, _ = encode_means(model, probe.test_x, cfg.trainer.eval_batch_size)
    log_latent_pictures(tracker, model, mu, probe, epoch, final=final)


def log_latent_pictures(tracker: NullTracker, model: VAE, mu: torch.Tensor, probe: Probe, step: int | None = None,
                        final: bool = False) -> None:
    """The test set's latent means `mu` and, for 2-D latents, the decoded manifold, drawn in the
    logging process from NumPy copies: keyed images at `step`, else (or also, `final`) the run's
    figures."""
    from vaelab.plots import as_array, latent_scatter, manifold_figure, manifold_latents

    labels = None if probe.test_y is None else as_array(probe.test_y)
    tracker.log_plot(LATENT_KEY, partial(latent_scatter, as_array(mu), labels), step, final=final)
    if mu.shape[1] == 2:
        decoded = decode(model, manifold_latents().to(mu.device))
        tracker.log_plot("manifold", partial(manifold_figure, as_array(decoded), shape=probe.image_shape), step,
                         final=final)


LATENT_KEY = "latent_space"  # the keyed image of the test set's latent means


class Lap:
    """Seconds since the previous call (or since creation)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def __call__(self) -> float:
        now = time.perf_counter()
        elapsed, self.last = now - self.last, now
        return elapsed


def finish(tracker: NullTracker, model: VAE, data: Dataset, cfg: DictConfig, probe: Probe,
           figures: bool = True) -> str:
    """End-of-run evaluation and figures; returns extra text for the console summary. The latent
    means and the manifold are drawn here only with `figures` (the last epoch's report drew them
    unless a resume found the training already done)."""
    mu, logvar = encode_means(model, data.test.x, cfg.trainer.eval_batch_size)
    kl_dims = kl_per_dimension(mu, logvar).tolist()
    final = {"test/active_units": float(active_units(mu, logvar))}
    final |= {f"test/kl_z{i}": kl for i, kl in enumerate(kl_dims)}  # collapsed units show as ~0
    if cfg.trainer.iw_samples:
        tracker.log_params({"iw.k": cfg.trainer.iw_samples})
        final["test/iw_nll"] = iw_nll(model, data.test.x, cfg.trainer.iw_samples, cfg.trainer.iw_batch_size,
                                      progress=cfg.trainer.progress)
    if data.labelled and cfg.probe.steps:
        train_mu, _ = encode_means(model, data.train.x, cfg.trainer.eval_batch_size)
        final["test/probe_acc"] = probe_accuracy(train_mu, data.train.y, mu, data.test.y, cfg.probe.steps,
                                                 cfg.probe.l2, seed=cfg.trainer.seed)
    tracker.log_metrics(final, step=cfg.trainer.epochs, once=True)  # a resumed wrap-up logs each once
    if tracker.enabled:
        from vaelab.plots import kl_per_dimension as kl_figure

        tracker.log_plot("kl_per_dimension", partial(kl_figure, kl_dims))
        if figures:
            log_latent_pictures(tracker, model, mu, probe)
        tracker.log_model(model, data.test.x[:1].cpu().numpy(), model_spec(cfg, data))
    return "".join(f"; {k} {v:.2f}" for k, v in final.items() if not k.startswith("test/kl_z"))
