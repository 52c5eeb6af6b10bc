"""`vaelab reproduce RUN_ID [key=value ...]`: train a finished run again from what the store holds
(its logged config, the current defaults filling keys added since), into a new run tagged with
the original's id, and print both results side by side. On the same CPU they are identical.

The logged config is checked before anything is built from it: a `_target_` (or any class name)
outside vaelab and torch is refused, since instantiating it would run code the store chose.
"""

from __future__ import annotations

import sys

from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from vaelab.errors import ConfigError, VaelabError

if TYPE_CHECKING:
    from vaelab.tracking.base import RunContext

REPRODUCES_TAG = "vaelab.reproduces"
SHOWN = ("test/loss", "test/recon", "test/kl", "test/iw_nll", "test/active_units", "test/probe_acc", "train/loss")


def stored_config(text: str, overrides: list[str], run_id: str, extra: list[str]) -> DictConfig:
    """The run's config as the store has it, on top of today's defaults for its choices, then `extra`."""
    from hydra import compose, initialize_config_dir

    from vaelab.config import untrusted, validate
    from vaelab.paths import config_dir

    stored = OmegaConf.create(text)
    for name in untrusted(OmegaConf.to_container(stored, resolve=False)):
        raise ConfigError(f"run {run_id}'s logged config names {name}, which is not vaelab's or torch's: refused")
    choices = [o for o in overrides if not o.startswith(("hydra", "+hydra"))]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        base = compose(config_name="config", overrides=choices)
    cfg = OmegaConf.merge(base, stored, OmegaConf.from_dotlist(extra))
    validate(cfg)
    return cfg


def reproduce(run_id: str, uri: str | None, extra: list[str]) -> str:
    """Train `run_id` again into a new run; the side-by-side table of both results."""
    from vaelab.app import execute
    from vaelab.identity import code_digest
    from vaelab.tracking.readback import logged_config, set_tags
    from vaelab.ui import default_store

    uri = uri or default_store()
    run, text, overrides = logged_config(uri, run_id)
    if run.info.status != "FINISHED":
        raise ConfigError(f"run {run_id} is {run.info.status}, not FINISHED: run its command again to resume it")
    cfg = stored_config(text, overrides, run_id, [*extra, f"tracking.uri={uri}", "trainer.resume=false",
                                                  f"tracking.run_name={run.info.run_name} (reproduced)"])
    if run.data.tags.get("vaelab.code") not in (None, code_digest()):
        print(f"vaelab reproduce: warning: vaelab's source differs from run {run_id}'s "
              f"({run.data.tags['vaelab.code']} then, {code_digest()} now): results may differ", flush=True)
    outcome = execute(cfg, job_folder(cfg, run_id, [*overrides, *extra]))
    set_tags(uri, outcome.run_id, {REPRODUCES_TAG: run_id})
    return side_by_side(run, logged_config(uri, outcome.run_id)[0])


def job_folder(cfg: DictConfig, run_id: str, overrides: list[str]) -> RunContext:
    """A folder in vaelab's home laid out as Hydra's job folders are, so that the new run logs its
    config as any run does (and can be reproduced in turn)."""
    import time

    import yaml

    from vaelab.paths import home
    from vaelab.tracking.base import RunContext

    folder = home() / "hydra" / "reproduce" / f"{run_id}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (folder / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return RunContext(output_dir=folder, overrides=overrides)


def side_by_side(original, again) -> str:  # noqa: ANN001 - MLflow run entities
    rows = [(k, original.data.metrics[k], again.data.metrics[k]) for k in SHOWN
            if k in original.data.metrics and k in again.data.metrics]
    lines = [f"{'metric':<18} {'original':>12} {'reproduced':>12} {'difference':>12}",
             f"{'':<18} {original.info.run_id[:12]:>12} {again.info.run_id[:12]:>12}"]
    lines += [f"{k:<18} {a:>12.4f} {b:>12.4f} {b - a:>+12.2e}" for k, a, b in rows]
    same = all(a == b for _, a, b in rows)
    lines.append("identical" if same else f"largest relative difference {max(abs(b - a) / max(abs(a), 1e-12) for _, a, b in rows):.2e}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from vaelab.signals import Interrupted, handle_signals

    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("-") and argv[0] != "--store":
        print("usage: vaelab reproduce RUN_ID [--store URI] [key=value ...]\n" + __doc__.split("\n\n")[0].split(": ", 1)[1])
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    run_id, rest = argv[0], argv[1:]
    uri = None
    if rest[:1] == ["--store"] and len(rest) > 1:
        uri, rest = rest[1], rest[2:]
    try:
        with handle_signals():
            print(reproduce(run_id, uri, rest))
    except Interrupted as err:
        print(f"vaelab reproduce: stopped by {err.name}", file=sys.stderr)
        return err.exit_code
    except VaelabError as err:
        print(f"vaelab reproduce: error: {err}", file=sys.stderr)
        return 2
    return 0
