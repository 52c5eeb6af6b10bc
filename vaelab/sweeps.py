"""A sweep's jobs as Hydra runs them: the record each job leaves in its output folder, whatever
launcher ran it (in-process, joblib workers, SLURM nodes sharing the folder), the console's
end-of-sweep table read from those records, and the names and tables a sweep's runs are shown
with (pure functions of MLflow's run entities). Nothing here talks to MLflow."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import textwrap
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

if TYPE_CHECKING:
    from vaelab.context import RunContext

log = logging.getLogger(__name__)
RECORD = "vaelab_job.json"
FAILED_STATUSES = ("FAILED", "KILLED")
SUMMARY_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "train/loss")


class JobFailed(Exception):
    """A sweep job failed (already reported); raised only for sweepers that record failed trials."""


def sweeper_counts_failures() -> bool:
    """Whether the sweeper of the job running now tells failed trials apart (Optuna's has
    `max_failure_rate`): it gets an exception; the others (Hydra's basic sweeper would stop the
    sweep on one) get NaN."""
    from hydra.core.hydra_config import HydraConfig

    return "max_failure_rate" in HydraConfig.get().sweeper


def job_failed(record: JobRecord, job_num: int | None, err: BaseException, counts_failures: bool) -> float:
    """Record and report a failed job of a sweep, which goes on: NaN for the sweeper, or JobFailed
    where it counts failures (`sweeper_counts_failures`)."""
    from vaelab.errors import VaelabError

    record.save("FAILED", error=f"{type(err).__name__}: {err}")
    detail = str(err) if isinstance(err, VaelabError) else "".join(traceback.format_exception(err))
    print(f"vaelab: job {job_num} failed: {detail}", file=sys.stderr, flush=True)
    if counts_failures:
        raise JobFailed(f"job {job_num} failed: {type(err).__name__}") from None
    return math.nan


@dataclass
class JobRecord:
    """How one job of a sweep ended, written into the job's own output folder."""

    path: Path | None
    job: int | None = None
    overrides: list[str] = field(default_factory=list)
    status: str = "RUNNING"
    test_loss: float | None = None
    run_id: str | None = None
    error: str | None = None

    @classmethod
    def start(cls, context: RunContext) -> JobRecord:
        path = context.output_dir / RECORD if context.output_dir is not None else None
        return cls(path, context.job_num, list(context.overrides))

    def save(self, status: str, *, test_loss: float | None = None, run_id: str | None = None,
             error: str | None = None) -> None:
        self.status, self.test_loss, self.run_id, self.error = status, test_loss, run_id, error
        if self.path is not None and self.path.parent.is_dir():
            body = {k: v for k, v in asdict(self).items() if k != "path"}
            try:
                self.path.write_text(json.dumps(body, indent=1))
            except OSError as err:  # a full disk: the run's own error is the one to report
                log.warning("the job record %s could not be written: %s", self.path, err.strerror)

    @classmethod
    def read_all(cls, sweep_dir: Path) -> list[JobRecord]:
        records = []
        for path in sweep_dir.rglob(RECORD):
            try:
                records.append(cls(path, **json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(records, key=lambda r: (r.job is None, r.job or 0))


def tolerate_failed_trials(config: DictConfig) -> None:
    """Optuna ends a study at its first failed trial unless `max_failure_rate` allows failures;
    in a search, diverging trials are normal, so vaelab allows them all unless the user set it.
    (The sweeper is built from this very config right after `on_multirun_start`.)"""
    from omegaconf import open_dict, read_write

    sweeper = config.hydra.sweeper
    user_set = any("max_failure_rate" in o for o in config.hydra.overrides.hydra)
    if "max_failure_rate" in sweeper and not user_set:
        with read_write(sweeper), open_dict(sweeper):
            sweeper.max_failure_rate = 1.0


def job_table(records: list[JobRecord], parent_id: str | None) -> str:
    """The console's end-of-sweep table: every job, its status, final test loss and the overrides
    that differ between jobs (those all jobs share are listed once, above)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    head = f"sweep of {len(records)} jobs: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    if parent_id:
        head += f" (MLflow parent run {parent_id})"
    shared = set.intersection(*(set(r.overrides) for r in records)) if len(records) > 1 else set()
    lines = [head] + ([f"  shared: {' '.join(o for o in records[0].overrides if o in shared)}"] if shared else [])
    lines.append(f"{'job':>4}  {'status':<9} {'test loss':>9}  overrides")
    for r in records:
        loss = f"{r.test_loss:.2f}" if r.test_loss is not None else "-"
        varied = " ".join(o for o in r.overrides if o not in shared) or "(none)"
        lines.append(f"{r.job if r.job is not None else '-':>4}  {r.status:<9} {loss:>9}  {varied}")
        if r.error and r.status in FAILED_STATUSES:  # whole words, at most three lines
            lines += [f"{'':>4}  {part}" for part in textwrap.wrap(r.error.splitlines()[0], 100, max_lines=3)]
    return "\n".join(lines)


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a sweep varies, in command-line order: `model.latent_dim=2,10` -> model.latent_dim."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o])
    except Exception:  # noqa: BLE001 - a tag we cannot parse names nothing, it does not fail a run
        return []
    return [o.key_or_group for o in parsed if o.is_sweep_override()]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key's last part (`latent_dim`), or the whole key where two last parts collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def job_values(child: Any, keys: list[str]) -> dict[str, str]:
    """The values a child was given for `keys`, as typed on its command line."""
    given = dict(o.split("=", 1) for o in child.data.tags.get("overrides", "").split() if "=" in o)
    return {k: given.get(k, "") for k in keys}


def sweep_table(children: list[Any], keys: list[str] | None = None) -> str:
    """CSV of a sweep's children: one column per swept key, then status and final metrics,
    rounded to what the eye compares (0.01 nats); metrics no child has are left out. A sweep
    over `trainer.seed` adds each configuration's mean and standard deviation over its seeds."""
    keys = keys or []
    metrics = [m for m in SUMMARY_METRICS if any(m in c.data.metrics for c in children)]
    seeds = seed_stats(children, keys, metrics) if "trainer.seed" in keys else None
    out = io.StringIO()
    writer = csv.writer(out)
    spread = [f"{m} {s}" for m in metrics for s in ("mean", "std")] + ["seeds"] if seeds is not None else []
    writer.writerow(["job", "run_name", *short_keys(keys).values(), "status", *metrics, *spread, "run_id"])
    for child in children:
        values = job_values(child, keys)
        group = seeds[config_of(values)] if seeds is not None else []
        writer.writerow([child.data.tags.get("hydra.job.num", ""), child.info.run_name,
                         *(values[k] for k in keys), child.info.status,
                         *(_number(child.data.metrics.get(m)) for m in metrics), *group, child.info.run_id])
    return out.getvalue()


def config_of(values: dict[str, str]) -> tuple:
    return tuple(v for k, v in values.items() if k != "trainer.seed")


def seed_stats(children: list[Any], keys: list[str], metrics: list[str]) -> dict[tuple, list[str]]:
    """For each configuration (the swept values but the seed): mean and sample standard deviation
    of every metric over its finished runs, and how many there are."""
    from vaelab.report import mean_std

    groups: dict[tuple, list[Any]] = {}
    for child in children:
        groups.setdefault(config_of(job_values(child, keys)), []).append(child)
    out = {}
    for config, members in groups.items():
        done = [c for c in members if c.info.status == "FINISHED"]
        row = []
        for m in metrics:
            stats = mean_std([c.data.metrics[m] for c in done if m in c.data.metrics])
            row += [f"{stats[0]:.2f}", f"{stats[1]:.2f}"] if stats else ["", ""]
        out[config] = [*row, str(len(done))]
    return out


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


def sweep_name(keys: list[str], jobs: int) -> str:
    """`sweep latent_dim×beta (4)`: what the sweep varies and how many jobs it ran."""
    varied = "×".join(short_keys(keys).values()) or "(nothing varied)"
    return f"sweep {varied} ({jobs})"


def shared_params(children: list[Any], keys: list[str]) -> dict[str, str]:
    """Params every child has with the same value, and each swept key with its values."""
    if not children:
        return {}
    first = children[0].data.params
    shared = {k: v for k, v in first.items() if all(c.data.params.get(k) == v for c in children[1:])}
    for key in keys:
        values = list(dict.fromkeys(job_values(c, [key])[key] for c in children))
        shared[key] = ", ".join(values)
    return shared


def best_child(children: list[Any]) -> Any | None:
    """The finished child with the lowest final test loss."""
    done = [c for c in children if c.info.status == "FINISHED" and "test/loss" in c.data.metrics]
    return min(done, key=lambda c: c.data.metrics["test/loss"], default=None)


# Short names of the keys sweeps vary most, so that the UI's runs table, which cuts names at about 12
# characters, still tells the jobs apart (`z2 β1`, `z10 β4`); the full values are in params and tags.
ALIASES = {"model.latent_dim": "z", "loss.beta": "β", "optimizer.lr": "lr", "trainer.seed": "seed",
           "model.hidden_dim": "h", "model.depth": "depth", "trainer.batch_size": "bs", "trainer.epochs": "ep",
           "loss.k": "k", "optimizer.weight_decay": "wd"}


def sweep_job_name(sweep_overrides: str, job_overrides: list[str]) -> str | None:
    """A sweep job's name: the values of the keys the sweep varies, in the sweep's order, well-known
    keys by their short names (`z2 β4`), a config group by its option (`conv`), others as `name=value`."""
    swept = swept_keys(sweep_overrides.split())
    values = dict(o.split("=", 1) for o in job_overrides if "=" in o)
    short = short_keys(swept)

    def part(key: str) -> str:
        if key in ALIASES:
            return f"{ALIASES[key]}{values[key]}"
        return values[key] if "." not in key else f"{short[key]}={values[key]}"

    return " ".join(part(k) for k in swept if k in values) or None
