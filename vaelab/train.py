"""The training loop: steps, epochs, evaluation. It reports through a callback; it never logs."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from vaelab.checkpoint import TrainingState
from vaelab.data import Dataset, batches
from vaelab.errors import DivergenceError
from vaelab.metrics import evaluate_elbo
from vaelab.models import VAE
from vaelab.objectives import ELBO

# Progress bars of one process take a thread lock: tqdm's default also makes a multiprocessing
# semaphore in every process, which a parallel sweep's worker killed by joblib leaves behind
# ("leaked semaphore objects" at the sweep's exit).
tqdm.set_lock(threading.RLock())

EpochCallback = Callable[[int, dict[str, float], torch.Tensor], None]  # epoch, metrics, the test means
CheckpointCallback = Callable[[TrainingState], None]


def train_epoch(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    batch_size: int,
    objective: ELBO,
    generator: torch.Generator,
    bar: tqdm,
    progress_every: int = 50,
    autocast: torch.dtype | None = None,
    first_step: int = 1,
) -> dict[str, float]:
    """One pass over the training set; returns image-weighted means of loss, recon and kl.

    `first_step` is the global step of the epoch's first batch: the objective's KL schedule
    is a function of it.
    """
    model.train()
    x = data.train.x
    sums = torch.zeros(3, device=x.device)  # loss, recon, kl summed over images, kept on device
    shown = RunningLoss()
    seen = 0
    for step, xb in enumerate(batches(x, batch_size, generator, data.binarize), start=1):
        terms = objective(model, xb, first_step + step - 1, autocast)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        sums.add_(torch.stack(terms).detach(), alpha=len(xb))
        seen += len(xb)
        bar.update(1)
        if step % progress_every == 0:
            shown.refresh(bar, sums[0], seen)
    loss, recon, kl = (sums / seen).tolist()  # the one device->host sync of the epoch
    bar.set_postfix(loss=f"{loss:.2f}")  # exact, and shown even when the epoch is shorter than a refresh
    return {"loss": loss, "recon": recon, "kl": kl}


class RunningLoss:
    """The running loss on the progress bar without stalling the device.

    Each refresh starts a non-blocking copy of the device-side sum and shows the previous copy,
    once a CUDA event says it has landed. On the CPU `.to("cpu")` would return the running sum
    itself, which the loop keeps adding to, so there the snapshot is a clone.
    """

    def __init__(self) -> None:
        self._copy: torch.Tensor | None = None
        self._seen = 0
        self._ready: torch.cuda.Event | None = None

    def refresh(self, bar: tqdm, total: torch.Tensor, seen: int) -> None:
        if self._copy is not None and (self._ready is None or self._ready.query()):
            bar.set_postfix(loss=f"{self._copy.item() / self._seen:.2f}")
        snapshot = total.detach()
        snapshot = snapshot.to("cpu", non_blocking=True) if snapshot.is_cuda else snapshot.clone()
        self._copy, self._seen = snapshot, seen
        if total.is_cuda:
            self._ready = torch.cuda.Event()
            self._ready.record()


def fit(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    data: Dataset,
    *,
    scheduler: LRScheduler | None = None,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    objective: ELBO,
    seed: int,
    progress: bool = True,
    progress_every: int = 50,
    autocast: torch.dtype | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: EpochCallback | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> dict[str, float]:
    """Train for `epochs` (continuing after a `resume` checkpoint's epoch), evaluate the test set
    after each, and return the last epoch's metrics. After each epoch's report, `on_checkpoint`
    gets the training state, from which a checkpoint of that epoch can be taken."""
    generator = torch.Generator(device=data.train.x.device).manual_seed(seed)
    state = TrainingState(model, optimizer, scheduler, generator)
    if resume is not None:
        for note in state.load_state_dict(resume):
            print(f"resume: {note}")
    steps = math.ceil(len(data.train) / batch_size)
    for epoch in range(state.epoch + 1, epochs + 1):
        start = time.perf_counter()
        with tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", disable=None if progress else True, leave=False) as bar:
            train = train_epoch(
                model, optimizer, data, batch_size, objective, generator, bar, progress_every, autocast,
                first_step=(epoch - 1) * steps + 1,
            )
        train_s = time.perf_counter() - start
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        test, means = evaluate_elbo(model, data.test.x, eval_batch_size, autocast)
        metrics = {f"train/{k}": v for k, v in train.items()} | {f"test/{k}": v for k, v in test.items()}
        metrics |= objective.metrics(epoch * steps)  # the schedule at the epoch's last step
        metrics |= {"lr": lr, "time/train_s": train_s, "time/epoch_s": time.perf_counter() - start}
        check_finite(metrics, epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, means)
        state.epoch, state.history = epoch, [*state.history, metrics]
        if on_checkpoint is not None:
            on_checkpoint(state)
    return state.history[-1]


def check_finite(metrics: dict[str, float], epoch: int) -> None:
    """NaN guard: stop with a clear message instead of training on garbage."""
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise DivergenceError(
            f"non-finite metrics at epoch {epoch}: {bad}; lower optimizer.lr or check the data"
        )
