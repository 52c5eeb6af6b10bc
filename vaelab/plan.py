"""`vaelab plan <a sweep's arguments>`: what running them would do to each job, training nothing:
skip it (finished), resume it (from which epoch), refuse it (it failed before), or train it.

The jobs are those Hydra's basic sweeper (and the joblib and SLURM launchers) would run: the
product of the comma-separated values, in order. Each is composed as the run would compose it,
its identity computed (config, code and data), and the store (and the local checkpoint) read.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from typing import Any

from vaelab.errors import VaelabError


@dataclass
class JobPlan:
    job: int
    overrides: list[str]
    action: str  # skip, resume, refuse, running, train
    detail: str
    cfg: Any = field(default=None, repr=False)  # the job's composed config


def jobs(args: list[str]) -> list[list[str]]:
    """Each job's overrides: the product of every sweep override's values (Hydra's basic sweeper)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
              else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.product(*values)]


def plan(args: list[str]) -> list[JobPlan]:
    from hydra import compose, initialize_config_dir

    from vaelab.config import validate
    from vaelab.errors import ConfigError
    from vaelab.paths import config_dir

    task = [a for a in args if not a.startswith(("hydra/", "hydra.", "+hydra", "-"))]
    if any(a.startswith(("hydra/sweeper=", "hydra.sweeper.")) for a in args):
        raise ConfigError("plan knows grid sweeps; a sweeper such as optuna proposes its trials as it goes")
    plans = []
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        for number, overrides in enumerate(jobs(task)):
            cfg = compose(config_name="config", overrides=overrides)
            validate(cfg)
            plans.append(JobPlan(number, overrides, *decide(cfg), cfg=cfg))
    return plans


def decide(cfg) -> tuple[str, str]:  # noqa: ANN001 - a composed DictConfig
    """(action, detail) for one job, as `app.execute` would decide it."""
    from vaelab.building import build
    from vaelab.resuming import Spool, plan_resume
    from vaelab.checkpoint import load
    from vaelab.errors import CheckpointError, ConfigError, PreviousFailure
    from vaelab.identity import config_identity
    from vaelab.paths import home

    identity = config_identity(cfg, build("data", cfg.data).digest())
    tracker = build("tracking", cfg.tracking)
    past = tracker.lookup(identity)
    try:
        resume = plan_resume(past, cfg.trainer.resume, cfg.trainer.retry_failed)
    except PreviousFailure:
        return "refuse", f"failed before in run {past.run_id}: {(past.error or 'no message').splitlines()[0][:120]}"
    except ConfigError:
        return "running", f"run {past.run_id} is training now (pid {past.pid})"
    if resume.skip:
        return "skip", f"finished in run {past.run_id}, test loss {past.test_loss:.2f}"
    spool = Spool(home() / "checkpoints" / f"{identity}-{tracker.scope()}")
    epochs = [past.checkpoint_epoch] if past is not None and past.checkpoint_epoch is not None else []
    if spool.path.is_file():
        try:
            epochs.append(int(load(spool.path)["epoch"]))
        except CheckpointError:
            pass
    if resume.past is not None:
        return "resume", f"run {past.run_id} ({past.status}) from epoch {max(epochs, default=0)} of {cfg.trainer.epochs}"
    if epochs:
        return "resume", f"a new run from the local checkpoint's epoch {max(epochs)} of {cfg.trainer.epochs}"
    return "train", "a new run" if cfg.trainer.resume or past is None else f"a new run (trainer.resume=false; {past.run_id} kept)"


def stacks(plans: list[JobPlan], args: list[str]) -> list[str]:
    """Under `hydra/launcher=stacked`, which jobs would train together (the launcher's own first lines)."""
    from vaelab.stacked import group_jobs, grouping_line

    limit = [int(a.split("=", 1)[1]) for a in args if a.startswith("hydra.launcher.max_members=")]
    return [grouping_line([plans[i].job for i in members], why)
            for members, why in group_jobs([p.cfg for p in plans], limit[-1] if limit else 64)]


def plan_text(plans: list[JobPlan]) -> str:
    counts = {a: sum(p.action == a for p in plans) for a in ("skip", "resume", "refuse", "running", "train")}
    head = f"plan of {len(plans)} jobs (nothing is trained): " + ", ".join(
        f"{n} to {a}" if a != "running" else f"{n} running" for a, n in counts.items() if n)
    shared = set.intersection(*(set(p.overrides) for p in plans)) if len(plans) > 1 else set()
    lines = [head, f"{'job':>4}  {'action':<8} overrides", ]
    for p in plans:
        varied = " ".join(o for o in p.overrides if o not in shared) or "(none)"
        lines += [f"{p.job:>4}  {p.action:<8} {varied}", f"{'':>4}  {'':<8} {p.detail}"]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: vaelab plan [--multirun] [group=option ...] [key=v1,v2 ...]\n" + __doc__.split("\n\n")[0])
        return 0
    from vaelab.errors import config_error

    try:
        plans = plan(argv)
        print(plan_text(plans))
        if "hydra/launcher=stacked" in argv:
            print("\n".join(stacks(plans, argv)))
    except VaelabError as err:
        print(f"vaelab plan: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - a bad config or override: the run's own one-line message
        message = config_error(err)
        if message is None:
            raise
        print(f"vaelab plan: error: {message}", file=sys.stderr)
        return 2
    return 0
