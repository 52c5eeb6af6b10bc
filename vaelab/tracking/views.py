"""Runs read back from a store as `vaelab.report.RunView`s: params, final metrics, curves and the
last pictures of any runs, a sweep's parent standing for its children."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vaelab.report import CURVES, PICTURES, RunView
from vaelab.tracking.presentation import FIGURES, run_config, run_link, ui_base

KEYED = re.compile(r"images/(?P<key>[^+/]+)\+step\+(?P<step>\d+)\+.*\.png")


def expand(client: Any, ids: Iterable[str]) -> list[Any]:
    """The runs `ids` name, a sweep's parent replaced by its children, each once, in order."""
    from mlflow.exceptions import MlflowException

    from vaelab.errors import ConfigError
    from vaelab.tracking.store import sweep_children

    found: dict[str, Any] = {}
    for run_id in ids:
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"no run {run_id} in the store") from None
        for one in sweep_children(client, run_id) if run.data.tags.get("sweep") == "parent" else [run]:
            found.setdefault(one.info.run_id, one)
    return list(found.values())


def run_views(client: Any, runs: list[Any], uri: str, ui_url: str | None = None,
              pictures: bool = True) -> list[RunView]:
    names: dict[str, str] = {}
    views = []
    for run in runs:
        exp = run.info.experiment_id
        if exp not in names:
            names[exp] = client.get_experiment(exp).name
        views.append(RunView(
            run.info.run_id, run.info.run_name or run.info.run_id, run.info.status, names[exp],
            run_config(run), dict(run.data.metrics),
            {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
             for key in CURVES if key in run.data.metrics},
            last_pictures(client, run.info.run_id) if pictures else {},
            run.data.tags.get("error", ""), run_link(ui_base(uri, ui_url), exp, run.info.run_id)))
    return views


def last_pictures(client: Any, run_id: str) -> dict[str, bytes]:
    """Each picture's final figure (`figures/<key>.png`), else its keyed image of the last step."""
    chosen: dict[str, tuple[int, str]] = {}
    for item in client.list_artifacts(run_id, "images"):
        match = KEYED.fullmatch(item.path)
        if match and match["key"] in PICTURES and int(match["step"]) >= chosen.get(match["key"], (-1, ""))[0]:
            chosen[match["key"]] = (int(match["step"]), item.path)
    for item in client.list_artifacts(run_id, FIGURES):
        key = Path(item.path).stem
        if key in PICTURES:
            chosen[key] = (10**9, item.path)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (_, path) in chosen.items():
            out[key] = Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
    return out
