"""How a run reads, without MLflow: its name, tags, params, config tag and description, its logged
model's name and its address in the UI (what `vaelab.sweeps` is for a sweep)."""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from vaelab.identity import compared

if TYPE_CHECKING:
    from vaelab.context import RunContext

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000  # where `vaelab ui` and `make ui` listen by default
DEFAULT_UI = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
NOTE_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "train/loss")
CONFIG_TAG = "vaelab.config"  # the whole resolved config, JSON: what compare, the report and evaluate read
# Params are few: MLflow's image cards print every param above the picture, and about 60 pushed it
# out of sight. They are the options chosen (model=mlp), the values the command set and this core.
RESULT_GROUPS = ("experiment", "data", "model", "likelihood", "loss", "kl", "optimizer", "scheduler")
CORE_PARAMS = ("model.latent_dim", "loss.beta", "optimizer.lr", "trainer.epochs", "trainer.batch_size",
               "trainer.seed", "data.limit")


def run_name(cfg: DictConfig) -> str:
    """A readable name such as mlp-h256-z2-b1.0, unless tracking.run_name sets one."""
    if cfg.tracking.get("run_name"):
        return str(cfg.tracking.run_name)
    m = cfg.model
    width = f"-h{m.hidden_dim}" if "hidden_dim" in m else ""  # conv models have channels instead
    return f"{m.name}{width}-z{m.latent_dim}-b{float(cfg.loss.beta)}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"model": {"latent_dim": 2}} -> {"model.latent_dim": 2}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def job_tags(context: RunContext) -> dict[str, str]:
    """The job's Hydra context and MLflow's own columns: user, source (the command), its commit."""
    tags = {"overrides": " ".join(context.overrides) or "(none)", "mlflow.user": getpass.getuser(),
            "mlflow.source.name": sys.argv[0], "mlflow.source.type": "LOCAL"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(["git", "-C", str(Path(sys.argv[0]).resolve().parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if git.returncode == 0:
            tags["mlflow.source.git.commit"] = git.stdout.strip()
    if context.job_num is not None:
        tags["hydra.job.num"] = str(context.job_num)
    if context.sweep_dir:
        tags["hydra.sweep.dir"] = context.sweep_dir
    return tags


def compared_params(choices: Mapping[str, str], overrides: list[str], config: Mapping[str, Any]) -> dict[str, Any]:
    """The params a run shows: the options chosen, the keys the command set and the core, less what
    says nothing (`identity.compared`)."""
    set_keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o and "." in o.split("=", 1)[0]]
    chosen = [k for k in config if k in CORE_PARAMS or any(k == s or k.startswith(f"{s}.") for s in set_keys)]
    return {g: choices[g] for g in RESULT_GROUPS if g in choices} | {k: config[k] for k in chosen if compared(k)}


def config_tag(config: Mapping[str, Any]) -> str:
    """The whole flattened config as one tag value, if it fits MLflow's 8,000 characters."""
    text = json.dumps(config, default=str, separators=(",", ":"))
    return text if len(text) <= 8000 else "(too long for a tag: see the artifact hydra/config.yaml)"


def run_config(run: Any) -> dict[str, str]:
    """A run's whole config, flattened, values as text: its `vaelab.config` tag, else its params."""
    try:
        found = json.loads(run.data.tags[CONFIG_TAG])
    except (KeyError, ValueError):
        return dict(run.data.params)
    return {k: "null" if v is None else str(v) for k, v in found.items()}


def run_note(command: str, latest: Mapping[str, tuple[float, int, int]], status: str, error: str | None) -> str:
    """The run's description (markdown): how to run it again and its final results."""
    lines = ["**Command**", "", "```", command, "```", ""]
    if error:
        lines += [f"**{status}**: `{error[:500]}`", ""]
    shown = [k for k in NOTE_METRICS if k in latest]
    if shown:
        epochs = sorted({latest[k][1] for k in shown})
        at = f"epoch {epochs[0]}" if len(epochs) == 1 else "epochs " + ", ".join(map(str, epochs))
        lines += [f"**Final results** ({at}; losses in nats/image)", "", "| metric | value |", "|:---|---:|"]
        lines += [f"| {k} | {latest[k][0]:.2f} |" for k in shown]
    return "\n".join(lines)


def model_name(run_name: str) -> str:
    """A logged-model name from the run name (MLflow forbids / : . % and quotes in it)."""
    return "vae-" + re.sub(r"[/:.%\"' ]+", "_", run_name).strip("_")


def ui_base(uri: str | None, configured: str | None = None) -> str:
    """`tracking.ui_url` if set; a tracking server is its own UI; else where `vaelab ui` serves."""
    if configured:
        return configured.rstrip("/")
    return uri.rstrip("/") if uri and uri.startswith(("http://", "https://")) else DEFAULT_UI


def run_link(base: str, experiment_id: str | None, run_id: str | None) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_hint(uri: str | None) -> str:
    """How to open the UI that serves `uri`."""
    if uri and uri.startswith(("http://", "https://")):
        return "open"
    return "open the UI with `vaelab ui` (or `make ui`) and go to"
