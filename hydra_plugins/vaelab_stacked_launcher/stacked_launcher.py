"""`hydra/launcher=stacked`: a sweep's jobs of one shape trained together in this process, one
stacked model (`vaelab.stacked`), each job still its own run, folder and result.

Registered as Hydra's own launcher plugins are (a `hydra_plugins` package and a ConfigStore entry
in group `hydra/launcher`). Jobs that cannot share a stack run one after another, as the basic
launcher runs them. Hydra imports this module at every start: vaelab loads only in `launch`.
"""


import logging
from collections.abc import Sequence
from dataclasses import dataclass  # no `from __future__ import annotations`: Hydra execs this module unregistered
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.vaelab_stacked_launcher.stacked_launcher.StackedLauncher"
    max_members: int = 64  # jobs in one stack at most; more of one shape make several stacks


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="vaelab")


class StackedLauncher(Launcher):
    def __init__(self, max_members: int = 64) -> None:
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from vaelab.stacked import Group, group_jobs, grouping_line

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self._job_config(initial_job_idx + i, overrides) for i, overrides in enumerate(job_overrides)]
        plan = group_jobs(configs, self.max_members)
        for members, why in plan:  # `vaelab plan hydra/launcher=stacked ...` prints the same lines
            print(grouping_line([initial_job_idx + i for i in members], why), flush=True)
        returns: list[JobReturn | None] = [None] * len(configs)
        for members, _ in plan:
            if len(members) == 1:
                returns[members[0]] = self._run(configs[members[0]], self.task_function)
                continue
            group, opened = Group(), {}
            try:  # a signal while the jobs open: those already open end KILLED too
                for i in members:
                    opened[i] = self._run(configs[i], group.open)
            except BaseException as err:
                group.abort(err)
                raise
            group.train()
            for i, ret in opened.items():
                returns[i] = ret
                if ret.status == JobStatus.COMPLETED and ret.return_value is Group.PENDING:
                    self._settle(ret, group.results[configs[i].hydra.job.num])
                elif ret.status == JobStatus.COMPLETED and ret.return_value is Group.BUSY:
                    returns[i] = self._run(configs[i], self.task_function)  # now alone: it waits, then skips
        return returns

    def _job_config(self, idx: int, overrides: Sequence[str]) -> DictConfig:
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        return config

    def _run(self, config: DictConfig, task: TaskFunction) -> JobReturn:
        ret = run_job(hydra_context=self.hydra_context, task_function=task, config=config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    @staticmethod
    def _settle(ret: JobReturn, result: object) -> None:
        """A stacked job's result once its stack trained: its test loss, or the failure the sweeper counts."""
        ret.status = JobStatus.FAILED if isinstance(result, BaseException) else JobStatus.COMPLETED
        ret.return_value = result
