"""What a sweep's parent run shows: its name, params and best metrics, the table of its children
and the figures drawn from them. `log_sweep_summary` writes it all; `sweep_link` points at it."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

SUMMARY_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "train/loss")
BEST_METRICS = ("test/loss", "test/recon", "test/kl")
BEST_TAG = "vaelab.best_run_id"


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


def sweep_children(client: Any, parent_id: str) -> list[Any]:
    """The runs nested under a sweep's parent, by Hydra job number."""
    exp_id = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return sorted(children, key=lambda r: int(r.data.tags.get("hydra.job.num", 0)))


def job_values(child: Any, keys: list[str]) -> dict[str, str]:
    """The values a child was given for `keys`, as typed on its command line."""
    given = dict(o.split("=", 1) for o in child.data.tags.get("overrides", "").split() if "=" in o)
    return {k: given.get(k, "") for k in keys}


def sweep_table(children: list[Any], keys: list[str] | None = None) -> str:
    """CSV of a sweep's children: one column per swept key, then status and final metrics,
    rounded to what the eye compares (0.01 nats); metrics no child has are left out."""
    keys = keys or []
    metrics = [m for m in SUMMARY_METRICS if any(m in c.data.metrics for c in children)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "run_name", *short_keys(keys).values(), "status", *metrics, "run_id"])
    for child in children:
        values = job_values(child, keys)
        writer.writerow([child.data.tags.get("hydra.job.num", ""), child.info.run_name,
                         *(values[k] for k in keys), child.info.status,
                         *(_number(child.data.metrics.get(m)) for m in metrics), child.info.run_id])
    return out.getvalue()


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


def log_sweep_summary(client: Any, parent_id: str) -> None:
    """Name, params, best metrics, the children's CSV and the figures of a sweep's parent run."""
    from mlflow.entities import Metric, Param

    parent = client.get_run(parent_id)
    keys = swept_keys(parent.data.tags.get("overrides", "").split())
    children = sweep_children(client, parent_id)
    client.update_run(parent_id, name=sweep_name(keys, len(children)))
    new = {k: v for k, v in shared_params(children, keys).items() if k not in parent.data.params}
    items = [Param(k, str(v)[:6000]) for k, v in new.items()]
    for start in range(0, len(items), 100):  # params are write-once: a re-run adds only new ones
        client.log_batch(parent_id, params=items[start : start + 100])
    best = best_child(children)
    if best is not None:
        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(f"best/{m}", best.data.metrics[m], now, 0)
                                             for m in BEST_METRICS if m in best.data.metrics])
        client.set_tag(parent_id, BEST_TAG, best.info.run_id)
        client.set_tag(parent_id, "vaelab.best_run_name", best.info.run_name)
    client.log_text(parent_id, sweep_table(children, keys), "sweep_summary.csv")
    log_sweep_figures(client, parent_id, children, sweep_name(keys, len(children)))


def log_sweep_figures(client: Any, parent_id: str, children: list[Any], title: str) -> None:
    """Rate-distortion (labelled points) and test loss per configuration, with two or more results."""
    done = [c for c in children if {"test/kl", "test/recon", "test/loss"} <= c.data.metrics.keys()]
    if len(done) < 2:
        return
    from vaelab.plots import objective_per_config, rate_distortion

    labels = [c.info.run_name for c in done]
    client.log_figure(parent_id, rate_distortion([c.data.metrics["test/kl"] for c in done],
                                                 [c.data.metrics["test/recon"] for c in done], labels, title),
                      "figures/rate_distortion.png")
    client.log_figure(parent_id, objective_per_config([c.data.metrics["test/loss"] for c in done], labels, title),
                      "figures/test_loss_per_config.png")


def sweep_link(client: Any, parent_id: str, uri: str, ui_url: str | None = None) -> str:
    """The parent run's address in the UI that serves the store `uri` (`tracking.ui_url` if given)."""
    from vaelab.tracking.links import run_link, ui_base

    experiment_id = client.get_run(parent_id).info.experiment_id
    return run_link(ui_base(uri, ui_url), experiment_id, parent_id)
