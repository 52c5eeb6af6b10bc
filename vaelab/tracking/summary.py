"""What a sweep's parent run shows: the table of its children and the figures drawn from them."""

from __future__ import annotations

import csv
import io
from typing import Any


SUMMARY_METRICS = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "train/loss")


def _varied(children: list[Any]) -> list[str]:
    """Each child's overrides less those every child shares: what the sweep varied."""
    tokens = [c.data.tags.get("overrides", "").split() for c in children]
    common = set.intersection(*(set(t) for t in tokens))
    return [" ".join(t for t in ts if t not in common) or c.info.run_name for ts, c in zip(tokens, children)]


def sweep_children(parent_id: str) -> list[Any]:
    """The runs nested under a sweep's parent, by Hydra job number."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp_id = client.get_run(parent_id).info.experiment_id
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return sorted(children, key=lambda r: int(r.data.tags.get("hydra.job.num", 0)))


def sweep_table(children: list[Any]) -> str:
    """CSV of a sweep's children: name, status, overrides and final metrics."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["job", "run_id", "run_name", "status", "overrides", *SUMMARY_METRICS])
    for child in children:
        tags, metrics = child.data.tags, child.data.metrics
        writer.writerow([tags.get("hydra.job.num", ""), child.info.run_id, child.info.run_name,
                         child.info.status, tags.get("overrides", ""),
                         *(metrics.get(m, "") for m in SUMMARY_METRICS)])
    return out.getvalue()




def log_sweep_summary(client: Any, parent_id: str) -> None:
    """The children's table (CSV) and, with two or more finished children, a rate-distortion plot."""
    children = sweep_children(parent_id)
    client.log_text(parent_id, sweep_table(children), "sweep_summary.csv")
    done = [c for c in children if {"test/kl", "test/recon"} <= c.data.metrics.keys()]
    if len(done) > 1:
        from vaelab.plots import rate_distortion

        figure = rate_distortion([c.data.metrics["test/kl"] for c in done],
                                 [c.data.metrics["test/recon"] for c in done], _varied(done))
        client.log_figure(parent_id, figure, "images/rate_distortion.png")
