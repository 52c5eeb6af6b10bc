"""The jobs of one stack, from opened to closed: each member trains, evaluates, reports and
checkpoints as it would alone, with its own random streams, while one stacked step trains all.

A `Group` is driven by the stacked launcher in three phases: `open` (a Hydra task function, one
call per job under Hydra's `run_job`: the job's folder, config and record, its run started),
`train` (every open member, stacked with those that start at the same epoch), and the results,
which the launcher hands back to Hydra. A member that diverges ends FAILED and leaves the stack at
the end of that epoch; the others go on. A signal ends every open member KILLED, each resumable.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from vaelab.app import Job, Outcome
from vaelab.context import job_context
from vaelab.resuming import Busy
from vaelab.building import AUTOCAST
from vaelab.checkpoint import TrainingState
from vaelab.data import Dataset
from vaelab.metrics import PLAIN_ELBO
from vaelab.stacked.stack import Stack
from vaelab.sweeps import JobRecord, job_failed, sweeper_counts_failures
from vaelab.train import RunningLoss, check_finite


class Streams:
    """A member's own copy of torch's global random streams (the CPU's and, on a GPU, the
    device's), taken right after its model was initialised: it draws its noise from them as it
    would from the global ones alone."""

    def __init__(self, device: torch.device) -> None:
        self.cpu = torch.Generator()
        self.cpu.set_state(torch.get_rng_state())
        self.device = self.cpu
        if device.type == "cuda":
            self.device = torch.Generator(device)
            self.device.set_state(torch.cuda.get_rng_state(device))

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """torch's global streams are this member's while the block runs (evaluation, checkpoints)."""
        torch.set_rng_state(self.cpu.get_state())
        if self.device is not self.cpu:
            torch.cuda.set_rng_state(self.device.get_state(), self.device.device)
        try:
            yield
        finally:
            self.cpu.set_state(torch.get_rng_state())
            if self.device is not self.cpu:
                self.device.set_state(torch.cuda.get_rng_state(self.device.device))


@contextlib.contextmanager
def timed(seconds: Counter[str], what: str) -> Iterator[None]:
    """Add the block's wall time to `seconds[what]`: where a group's time went."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[what] += time.perf_counter() - started


@dataclass
class Member:
    """An open job of the group and what it trains with."""

    job: Job
    record: JobRecord
    streams: Streams
    seconds: Counter[str]  # the group's
    state: TrainingState = field(init=False)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        job = self.job
        batches = torch.Generator(device=job.data.train.x.device).manual_seed(job.cfg.trainer.seed)
        self.state = TrainingState(job.model, job.optimizer, job.scheduler, batches)
        if job.resume is not None:
            with self.streams.current():
                for note in self.state.load_state_dict(job.resume):
                    print(f"{job.label}resume: {note}")

    def end_epoch(self, epoch: int, train: list[float], test: tuple[dict[str, float], torch.Tensor],
                  spent_s: tuple[float, float], steps: int) -> None:
        """What `fit` does after an epoch's training and test ELBO, for this member: the scheduler,
        the NaN guard, the report and the checkpoint. An error ends the member, not the group.
        `spent_s`: its share of the stacked training and of the stacked test ELBO, in seconds."""
        job, started = self.job, time.perf_counter()
        lr = job.optimizer.param_groups[0]["lr"]
        try:
            if job.scheduler is not None:
                job.scheduler.step()
            with self.streams.current():
                metrics = dict(zip(("train/loss", "train/recon", "train/kl"), train))
                metrics |= {f"test/{k}": v for k, v in test[0].items()} | job.objective.metrics(epoch * steps)
                metrics |= {"lr": lr, "time/train_s": spent_s[0],
                            "time/epoch_s": sum(spent_s) + time.perf_counter() - started}
                check_finite(metrics, epoch)
                with timed(self.seconds, "pictures and metrics"):
                    job.report(epoch, metrics, test[1])
                self.state.epoch, self.state.history = epoch, [*self.state.history, metrics]
                with timed(self.seconds, "checkpoints"):
                    job.checkpoint(self.state)
        except Exception as err:  # noqa: BLE001 - one member's failure (a divergence, a full disk) is its own
            self.error = err


class Group:
    """Jobs of one shape (`plan.stack_key`), opened one by one and then trained together."""

    PENDING = "pending: trained with its stack"  # what an open member's task returns to Hydra's run_job
    BUSY = "busy: run alone after the stack"  # its config is held by another process: it waits later, alone

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.data: Dataset | None = None  # loaded by the first member, shared by the others
        self.results: dict[int, float | BaseException] = {}  # job number -> test loss or the error
        self.counts_failures = False  # the sweeper's, read while Hydra's config is a job's
        self.seconds: Counter[str] = Counter()  # where the group's time goes

    def open(self, cfg: DictConfig) -> Any:
        """A Hydra task function: open this job (inside `run_job`, which made its folder and
        config); a job with nothing to train (finished before) or that fails here ends now."""
        with timed(self.seconds, "opening the jobs: store, data, models, runs"):
            return self._open(cfg)

    def _open(self, cfg: DictConfig) -> Any:
        context = job_context()
        self.counts_failures = sweeper_counts_failures()
        record = JobRecord.start(context)
        job: Job | None = None
        try:
            job = Job(cfg, context, label=f"[job {context.job_num}] ")
            try:  # a member never waits for a lock while its group holds others: two groups could wait on each other
                done = job.open(self.data, wait=False)
            except Busy as busy:
                job.__exit__(None, None, None)
                print(f"vaelab: job {context.job_num}: the same config is running in {busy}; "
                      "it runs after this stack", flush=True)
                return self.BUSY
            if done is None:
                self.data = job.data
                self.members.append(Member(job, record, Streams(job.device), self.seconds))
                return self.PENDING
            job.__exit__(None, None, None)
            record.save(done.status, test_loss=done.test_loss, run_id=done.run_id)
            return done.test_loss
        except BaseException as err:
            if job is not None:
                job.__exit__(type(err), err, err.__traceback__)
            if not isinstance(err, Exception):  # a signal: the sweep stops
                record.save("KILLED")
                raise
            return job_failed(record, context.job_num, err, self.counts_failures)

    def train(self) -> None:
        """Train every open member, stacked with those that start at the same epoch; close each."""
        if self.members:
            job = self.members[0].job
            numbers = ", ".join(str(m.job.context.job_num) for m in self.members)
            print(f"stacked: {len(self.members)} jobs train together (jobs {numbers})" if len(self.members) > 1
                  else f"stacked: job {numbers} trains alone (the others of its stack need not train now)")
            print(job.summary)
        try:
            by_start = lambda m: m.state.epoch  # noqa: E731
            for _, members in groupby(sorted(self.members, key=by_start), key=by_start):
                fit_stacked(list(members))
            for member in self.members:
                with timed(self.seconds, "wrap-up: final evaluation, figures, models"):
                    self._close(member)
            total = sum(self.seconds.values())
            print(f"stacked: {len(self.members)} jobs in {total:.1f} s: "
                  + ", ".join(f"{what} {s:.1f} s" for what, s in self.seconds.items()), flush=True)
        except BaseException as err:
            self.abort(err)
            raise

    def abort(self, err: BaseException) -> None:
        """A signal (or a bug) stops the group: every member still open ends KILLED, resumable; one
        that diverged before ends FAILED."""
        for member in self.members:
            if member.job.context.job_num not in self.results:
                ended = member.error or err
                member.job.__exit__(type(ended), ended, ended.__traceback__)
                member.record.save("FAILED" if member.error else "KILLED", error=type(ended).__name__)
                self.results[member.job.context.job_num] = ended

    def _close(self, member: Member) -> None:
        job, num = member.job, member.job.context.job_num
        try:
            if member.error is not None:
                raise member.error
            outcome: Outcome = job.close(member.state.history[-1])
            job.__exit__(None, None, None)
        except Exception as err:  # noqa: BLE001 - reported once, as a failed job of the sweep
            job.__exit__(type(err), err, err.__traceback__)
            try:
                self.results[num] = job_failed(member.record, num, err, self.counts_failures)
            except Exception as failed:  # noqa: BLE001 - the sweeper counts failures: it gets the exception
                self.results[num] = failed
            return
        member.record.save(outcome.status, test_loss=outcome.test_loss, run_id=outcome.run_id)
        self.results[num] = outcome.test_loss


def fit_stacked(members: list[Member]) -> None:
    """`train.fit` for members that start at the same epoch: one stacked step trains them all, one
    stacked pass takes their test ELBOs; each then reports and checkpoints its epoch. Members that
    fail leave the stack."""
    job = members[0].job
    trainer, data = job.cfg.trainer, job.data
    steps = math.ceil(len(data.train) / trainer.batch_size)
    for epoch in range(members[0].state.epoch + 1, trainer.epochs + 1):
        live = [m for m in members if m.error is None]
        if not live:
            return
        stack = Stack([m.job.model for m in live], AUTOCAST[trainer.precision])
        start = time.perf_counter()
        with timed(members[0].seconds, "stacked training steps"), tqdm(
                total=steps, desc=f"epoch {epoch}/{trainer.epochs} ({len(live)} stacked)",
                disable=None if trainer.progress else True, leave=False) as bar:
            train = train_epoch(stack, live, data, first_step=(epoch - 1) * steps + 1, bar=bar)
        trained = time.perf_counter()
        with timed(members[0].seconds, "test ELBO"):
            tests = evaluate_members(stack, live, data.test.x, trainer.eval_batch_size)
        shares = ((trained - start) / len(live), (time.perf_counter() - trained) / len(live))  # each member's part
        for member, row, test in zip(live, train, tests):
            member.end_epoch(epoch, row, test, shares, steps)


def noise(members: list[Member], size: int, device: torch.device) -> torch.Tensor:
    """Each member's z noise for a batch of `size`, from its own stream: (K, size, latent_dim), in
    the dtype `randn_like(mu)` would draw under the run's autocast."""
    trainer, latent = members[0].job.cfg.trainer, members[0].job.cfg.model.latent_dim
    dtype = AUTOCAST[trainer.precision] or torch.float32
    return torch.stack([torch.randn((size, latent), generator=m.streams.device, device=device, dtype=dtype)
                        for m in members])


def evaluate_members(stack: Stack, members: list[Member], x: torch.Tensor,
                     batch_size: int) -> list[tuple[dict[str, float], torch.Tensor]]:
    """`metrics.evaluate_elbo` for every member in one stacked pass over the same batches, each
    member's noise from its own stream: per member, its terms and its posterior means (N, latent_dim)."""
    sums, means = torch.zeros(len(members), 3, device=x.device), []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        recon, kl_dims, mu = stack.evaluate(xb, noise(members, len(xb), x.device))
        terms = [torch.stack(PLAIN_ELBO.combine(recon[k], kl_dims[k], 1)) for k in range(len(members))]
        sums += torch.stack(terms) * len(xb)
        means.append(mu)
    rows, means = (sums / len(x)).tolist(), torch.cat(means, dim=1)
    return [(dict(zip(("loss", "recon", "kl"), row)), means[k]) for k, row in enumerate(rows)]


def train_epoch(stack: Stack, members: list[Member], data: Dataset, first_step: int, bar: tqdm) -> list[list[float]]:
    """One pass over the training set for every member, each in its own batch order and noise;
    returns each member's image-weighted means of loss, recon and kl."""
    trainer = members[0].job.cfg.trainer
    x, size = data.train.x, trainer.batch_size
    orders = torch.stack([torch.randperm(len(x), device=x.device, generator=m.state.generator) for m in members])
    sums = torch.zeros(len(members), 3, device=x.device)  # (K, 3), kept on the device
    shown, seen = RunningLoss(), 0
    for step, begin in enumerate(range(0, len(x), size), start=1):
        index = orders[:, begin : begin + size]  # (K, B)
        xb = x.index_select(0, index.reshape(-1)).view(len(members), index.shape[1], -1)  # (K, B, D)
        if data.binarize:
            xb = torch.stack([torch.bernoulli(xb[k], generator=m.state.generator) for k, m in enumerate(members)])
        recon, kl_dims = stack.terms(xb, noise(members, index.shape[1], x.device))
        terms = [m.job.objective.combine(recon[k], kl_dims[k], first_step + step - 1) for k, m in enumerate(members)]
        stack.backward(torch.stack([t.loss for t in terms]).sum())
        for member in members:
            member.job.optimizer.step()
        sums.add_(torch.stack([torch.stack(t) for t in terms]).detach(), alpha=index.shape[1])
        seen += index.shape[1]
        bar.update(1)
        if step % trainer.progress_every == 0:
            shown.refresh(bar, sums[:, 0].sum() / len(members), seen)
    return (sums / seen).tolist()  # the one device->host sync of the epoch
