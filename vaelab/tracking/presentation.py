"""How a run presents itself in the MLflow UI: where its one-off figures go, its name within a
sweep, its description and the name of its logged model."""

from __future__ import annotations

import re
from collections.abc import Mapping


FIGURES = "figures"  # one-off figures; images/ belongs to MLflow's keyed images


def ui_hint(uri: str | None) -> str:
    """How to open the UI that serves `uri`."""
    if uri and uri.startswith(("http://", "https://")):
        return "open"
    return "open the UI with `vaelab ui` (or `make ui`) and go to"


def model_name(run_name: str) -> str:
    """A logged-model name from the run name (MLflow forbids / : . % and quotes in it)."""
    return "vae-" + re.sub(r"[/:.%\"' ]+", "_", run_name).strip("_")


def sweep_job_name(sweep_overrides: str, job_overrides: list[str]) -> str | None:
    """A sweep job's name: the values of the keys the sweep varies, e.g. `latent_dim=2 beta=4`."""
    from vaelab.tracking.summary import short_keys, swept_keys

    swept = swept_keys(sweep_overrides.split())
    values = dict(o.split("=", 1) for o in job_overrides if "=" in o)
    short = short_keys(swept)
    parts = [f"{short[k]}={values[k]}" for k in swept if k in values]
    return " ".join(parts) or None


def run_note(command: str, latest: Mapping[str, tuple[float, int, int]], status: str, error: str | None) -> str:
    """The run's description (markdown): how to run it again and its final results."""
    lines = ["**Command**", "", "```", command, "```", ""]
    if error:
        lines += [f"**{status}**: `{error[:500]}`", ""]
    shown = [k for k in NOTE_METRICS if k in latest]
    if shown:
        lines += ["**Final results** (nats/image)", "", "| metric | value | epoch |", "|---|---|---|"]
        lines += [f"| {k} | {latest[k][0]:.2f} | {latest[k][1]} |" for k in shown]
    return "\n".join(lines)


NOTE_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "train/loss")
