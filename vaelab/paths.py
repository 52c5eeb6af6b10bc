"""Where vaelab keeps what it writes: one home, whatever folder a command is started from."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "VAELAB_HOME"


def home() -> Path:
    """$VAELAB_HOME; else runs/ of the source checkout vaelab is imported from; else
    $XDG_DATA_HOME/vaelab (~/.local/share/vaelab). Holds the MLflow store, Hydra's output folders
    and local checkpoints, so `vaelab ui` (and `make ui`) always serve the runs a user made."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "runs").is_dir():
        return checkout / "runs"
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home).expanduser().resolve() / "vaelab"


def register_resolver() -> None:
    """`${vaelab_home:}` in configs resolves to `home()`; `${vaelab_pid:}` to the id of the
    process that resolves it first (cached with the config, as Hydra's `${now:}` is, so a sweep's
    jobs in other processes see the same): two sweeps started in the same second get two folders."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("vaelab_home"):
        OmegaConf.register_new_resolver("vaelab_home", lambda: str(home()))
    if not OmegaConf.has_resolver("vaelab_pid"):
        OmegaConf.register_new_resolver("vaelab_pid", lambda: str(os.getpid()), use_cache=True)


def config_dir() -> str:
    """conf/ inside the installed package (wheel), else the repo's top-level conf/ (checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"vaelab's configs are missing: no config.yaml in {here / 'conf'} or {here.parent / 'conf'}")
