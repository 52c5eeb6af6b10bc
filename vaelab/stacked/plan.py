"""Which jobs of a sweep can share a stack: those equal in everything but what a stack lets vary
per member (`FREE`). Each member has its own optimizer, LR scheduler, objective and random streams,
so those may differ; the model, likelihood, data, device, precision, batch size and epochs may not."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

# Config keys a member may set on its own: its seed, beta, KL schedule, optimizer and LR schedule.
FREE = ("trainer.seed", "loss.beta", "kl", "optimizer", "scheduler")
# Keys that only say how a run is shown or kept, never what it trains.
SHOWN = ("tracking.run_name", "trainer.progress", "trainer.progress_every")


def stack_key(cfg: DictConfig) -> tuple[str | None, str]:
    """(key, why): jobs with the same key train in one stack; key None: this job trains alone, for `why`."""
    try:
        objective = get_class(cfg.loss._target_)
    except Exception:  # noqa: BLE001 - a bad target fails in the job itself, with its own message
        return None, "its loss cannot be built"
    if not getattr(objective, "stackable", False):
        return None, f"loss={cfg.loss.get('name', cfg.loss._target_)} trains k samples apart"
    if str(cfg.trainer.device) not in ("auto", "cpu") and not str(cfg.trainer.device).startswith("cuda"):
        return None, f"trainer.device={cfg.trainer.device}: stacks run on the CPU or CUDA"
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree.pop("hydra", None)
    for dotted in (*FREE, *SHOWN):
        *path, last = dotted.split(".")
        node = tree
        for part in path:
            node = node.get(part, {})
        node.pop(last, None)
    return json.dumps(tree, sort_keys=True, default=str), ""


def group_jobs(configs: Sequence[DictConfig], max_members: int) -> list[tuple[list[int], str]]:
    """The jobs (indices into `configs`) of each stack, in sweep order, at most `max_members` a
    stack, with why a job trains alone ('' for a stack of two or more)."""
    groups: dict[str, list[int]] = {}
    alone: list[tuple[list[int], str]] = []
    for index, cfg in enumerate(configs):
        key, why = stack_key(cfg)
        if key is None:
            alone.append(([index], why))
        else:
            groups.setdefault(key, []).append(index)
    stacks = [(members[i : i + max_members], "") for members in groups.values()
              for i in range(0, len(members), max_members)]
    stacks = [(m, "" if len(m) > 1 else "no other job has its shapes") for m, _ in stacks]
    return sorted(stacks + alone, key=lambda group: group[0][0])


def grouping_line(numbers: Sequence[int], why: str) -> str:
    """How the launcher (and `vaelab plan`) tells one group: the jobs that train together, or one alone and why."""
    many = len(numbers) > 1
    return (f"stacked launcher: job{'s' if many else ''} {', '.join(map(str, numbers))} "
            + ("train together" if many else f"alone ({why})"))
