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


def config_dir() -> str:
    """conf/ inside the installed package (wheel), else the repo's top-level conf/ (checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"vaelab's configs are missing: no config.yaml in {here / 'conf'} or {here.parent / 'conf'}")


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


COMPLETION_FLAGS = ("-sc", "--shell-completion")
COMPLETION_USAGE = """vaelab: --shell-completion needs what to do, e.g.
  eval "$(vaelab -sc install=bash)"     # complete groups, options and keys in this bash session
  vaelab -sc install=fish | source      # fish; also install=zsh; uninstall=bash removes it"""


def cli() -> object:
    """The `vaelab` command: `vaelab ui [...]` serves the store, anything else is the Hydra app."""
    args = sys.argv[1:]
    if args[:1] == ["ui"]:
        from vaelab.ui import main as ui

        sys.exit(ui(args[1:]))
    if len(args) == 1 and args[0] in COMPLETION_FLAGS:  # Hydra alone would print a traceback
        print(COMPLETION_USAGE, file=sys.stderr)
        sys.exit(2)
    return main()


if __name__ == "__main__":
    cli()
