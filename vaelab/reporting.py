"""What a run logs as it goes: the startup time, the data sets, each epoch's pictures, metrics
and console line, and the wrap-up (final evaluation, figures, the model)."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig

from vaelab.building import model_spec
from vaelab.data import Dataset, default_root
from vaelab.linear_probe import probe_accuracy
from vaelab.metrics import active_units, decode, encode_means, iw_nll, kl_per_dimension, reconstruct
from vaelab.models import VAE
from vaelab.tracking import NullTracker, RunContext

SAMPLE_GRID = 64  # random samples shown per epoch, 8 x 8


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


def log_datasets(tracker: NullTracker, data_cfg: DictConfig, data: Dataset) -> None:
    """The train and test images as MLflow dataset inputs, named with how many were used."""
    source = str(data_cfg.get("root") or data_cfg.get("path") or default_root())
    tracker.log_dataset(f"{data_cfg.name} train ({len(data.train):,})", data.train, source, "training")
    tracker.log_dataset(f"{data_cfg.name} test ({len(data.test):,})", data.test, source, "testing")


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
                 cfg: DictConfig, lap: Lap, logged: set[int], after: dict[str, float], label: str = "",
                 means: torch.Tensor | None = None) -> None:
    """The epoch's pictures, then its metrics (step=epoch; not again for an epoch the store has
    from before a resume), test/loss first, then `after` (once), then its console line. MLflow's
    Compare view opens on the first metric a run logged: the objective, not `time/startup_s`."""
    every = cfg.trainer.images_every
    last = epoch == cfg.trainer.epochs
    if tracker.enabled and (last or (every and epoch % every == 0)):
        log_epoch_images(tracker, model, probe, cfg, epoch, final=last, means=means)
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
                     final: bool = False, means: torch.Tensor | None = None) -> None:
    """The pictures of one epoch as keyed images (the UI's Image grid, with a step slider):
    reconstructions, prior samples, the test set's latent means and, for 2-D latents, the manifold.
    The last epoch's latent means and manifold are also the run's figures (`final`)."""
    from vaelab.plots import image_grid, reconstruction_grid

    shape = probe.image_shape
    tracker.log_image("reconstructions",
                      reconstruction_grid(probe.originals, reconstruct(model, probe.originals), shape=shape), epoch)
    tracker.log_image("samples", image_grid(decode(model, probe.z_samples), ncol=8, shape=shape), epoch)
    if means is None:  # the epoch's test ELBO made them in the same pass (`metrics.evaluate_elbo`), if it ran
        means, _ = encode_means(model, probe.test_x, cfg.trainer.eval_batch_size)
    log_latent_pictures(tracker, model, means, probe, epoch, final=final)


def log_latent_pictures(tracker: NullTracker, model: VAE, mu: torch.Tensor, probe: Probe, step: int | None = None,
                        final: bool = False) -> None:
    """The test set's latent means `mu` and, for 2-D latents, the decoded manifold: keyed images at
    `step`, else (or also, `final`) the run's figures. The latent means are a figure at every step
    (their axes move as training goes); the manifold's keyed image is its mosaic, as the samples',
    and only its figure has the latent axes, which never change (a figure costs ~0.1 s of CPU,
    taken from training, every epoch). Figures are drawn on the tracker's thread from NumPy copies."""
    from vaelab.plots import as_array, latent_scatter, manifold_figure, manifold_latents, manifold_mosaic

    labels = None if probe.test_y is None else as_array(probe.test_y)
    tracker.log_plot(LATENT_KEY, partial(latent_scatter, as_array(mu), labels), step, final=final)
    if mu.shape[1] == 2:
        decoded = as_array(decode(model, manifold_latents().to(mu.device)))
        if step is not None:  # at 1x (420 px for MNIST; the samples' grid is 484 px at 2x): a quarter of the PNG time
            tracker.log_image("manifold", manifold_mosaic(decoded, shape=probe.image_shape), step)
        if step is None or final:
            tracker.log_plot("manifold", partial(manifold_figure, decoded, shape=probe.image_shape))


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
