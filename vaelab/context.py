"""What Hydra knows about the job running now: its folder, overrides, number and launcher, as the
app, the tracker and the sweep's records use it (`job_context`, inside a Hydra job)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig


@dataclass
class RunContext:
    """What Hydra knows about a job: what the app, the tracker and the job record use."""

    output_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    job_num: int | None = None
    sweep_dir: str | None = None
    parallel_jobs: int = 1  # jobs the launcher runs at once on this machine (joblib's n_jobs)
    choices: dict[str, str] = field(default_factory=dict)  # the option of each config group: model=mlp, ...


def job_context() -> RunContext:
    """What Hydra knows about the job running now (its folder, overrides, number, launcher)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return RunContext(
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        job_num=hc.job.num if multirun else None,
        sweep_dir=hc.sweep.dir if multirun else None,
        parallel_jobs=parallel_jobs(hc.launcher) if multirun else 1,
        choices={g: str(c) for g, c in hc.runtime.choices.items() if c is not None and not g.startswith(("hydra", "schema"))},
    )


def parallel_jobs(launcher: DictConfig) -> int:
    """How many jobs the launcher runs at once on this machine: its n_jobs (joblib's; -1: all cores)."""
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return 1
    cores = os.cpu_count() or 1
    return cores if n_jobs < 0 else max(1, min(int(n_jobs), cores))
