"""`python -m vaelab [overrides]` and the `vaelab` console script: a thin Hydra shim over `run`."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vaelab.config import register_configs
from vaelab.errors import VaelabError
from vaelab.paths import config_dir  # noqa: F401 - also imported from here by tests and tools


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    from vaelab.app import run  # torch and friends load after Hydra has parsed the command line

    try:
        return run(cfg, hydra_context())
    except VaelabError as err:
        print(f"vaelab: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("vaelab: interrupted", file=sys.stderr)
        sys.exit(130)


def hydra_context():  # noqa: ANN201 - RunContext, imported lazily with the rest of the app
    from vaelab.tracking import RunContext

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return RunContext(
        output_dir=Path(hc.runtime.output_dir),
        overrides=list(hc.overrides.task),
        job_num=hc.job.num if multirun else None,
        sweep_dir=hc.sweep.dir if multirun else None,
    )


if __name__ == "__main__":
    main()
