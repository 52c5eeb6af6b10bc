"""Runs read back for the commands that use them: `vaelab compare` and the sweep report (as
`vaelab.report.RunView`s), evaluate (the logged model), reproduce (the logged config)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vaelab.presentation import run_config, run_link, ui_base
from vaelab.report import CURVES, PICTURES, RunView
from vaelab.tracking.store import FIGURES, SPEC, WEIGHTS, connect, reach, sweep_children, verify

KEYED = re.compile(r"images/(?P<key>[^+/]+)\+step\+(?P<step>\d+)\+.*\.png")


def expand(client: Any, ids: Iterable[str]) -> list[Any]:
    """The runs `ids` name, a sweep's parent replaced by its children, each once, in order."""
    from mlflow.exceptions import MlflowException

    from vaelab.errors import ConfigError

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
        if Path(item.path).stem in PICTURES:
            chosen[Path(item.path).stem] = (10**9, item.path)
    with tempfile.TemporaryDirectory() as tmp:
        return {key: Path(client.download_artifacts(run_id, path, tmp)).read_bytes() for key, (_, path) in chosen.items()}


def logged_config(uri: str, run_id: str) -> tuple[Any, str, list[str]]:
    """A run (its entity), its logged config (Hydra's `config.yaml`, as text) and its overrides."""
    import yaml
    from mlflow.exceptions import MlflowException

    from vaelab.errors import ConfigError

    client = reach(uri)
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(client.download_artifacts(run_id, "hydra/config.yaml", tmp)).read_text()
            overrides = yaml.safe_load(Path(client.download_artifacts(run_id, "hydra/overrides.yaml", tmp)).read_text())
    except MlflowException as err:
        raise ConfigError(f"run {run_id}: no such run with a logged config in {uri} ({err.message[:160]})") from None
    return run, config, list(overrides or [])


def set_tags(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    client = reach(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def log_to_run(uri: str, run_id: str, metrics: Mapping[str, float], params: Mapping[str, Any] | None = None) -> None:
    """Add metrics (and params not yet set: they are write-once) to a finished run, keeping its status."""
    client = connect(uri)
    logged = client.get_run(run_id).data.params
    for key, value in (params or {}).items():
        if key not in logged:
            client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)


def load_run(uri: str, run_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """A run's logged model as its spec (the configs that rebuild it) and its weights (on the CPU,
    `weights_only=True`, checked against their digest), and the run's flattened config. Nothing
    from the store is unpickled: MLflow's pickled model is never read."""
    import json

    import mlflow.artifacts
    import torch
    from mlflow.exceptions import MlflowException

    from vaelab.errors import CheckpointError, ConfigError

    try:
        client = connect(uri)
        run = client.get_run(run_id)
        outputs = run.outputs.model_outputs if run.outputs else []
        if not outputs:
            raise ConfigError(f"run_id={run_id}: the run has no logged model")
        location = client.get_logged_model(outputs[-1].model_id).artifact_location  # its last one
        with tempfile.TemporaryDirectory() as tmp:
            try:
                spec_file, weights_file = [Path(mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{location}/{name}", dst_path=tmp, tracking_uri=uri)) for name in (SPEC, WEIGHTS)]
            except MlflowException:
                raise ConfigError(
                    f"run_id={run_id}: its model was logged without {WEIGHTS}, and vaelab does not unpickle "
                    f"a store's files; if you trust this store: mlflow.pytorch.load_model('{location}')") from None
            verify(run.data.tags, run_id, SPEC, spec_file)
            verify(run.data.tags, run_id, WEIGHTS, weights_file)
            spec = json.loads(spec_file.read_text())
            try:
                weights = torch.load(weights_file, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - a pickle with code in it is refused here
                raise ConfigError(f"run_id={run_id}: its {WEIGHTS} is not plain weights "
                                  f"({type(err).__name__}); refused") from None
    except MlflowException as err:
        raise ConfigError(f"run_id={run_id}: no such run with a logged model in {uri} ({err.message[:200]})") from None
    except CheckpointError as err:
        raise ConfigError(str(err)) from None
    return spec, weights, run_config(run)
