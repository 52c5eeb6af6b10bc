"""`vaelab --help`: each group's options (the one in use first) and every key with its value
and its one-line description from the schema (vaelab/config.py), so the help cannot drift."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

GROUPS = ("data", "model", "likelihood", "loss", "kl", "optimizer", "scheduler", "trainer", "tracking", "experiment")
KEY_GROUPS = (*GROUPS[:-1], "probe")  # groups whose keys are listed (probe has keys, no options)


def group_options(group: str) -> list[str]:
    """The options Hydra finds for `group` (conf/ and any hydra.searchpath), sorted."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    return []


def groups_text(choices: dict[str, Any]) -> str:
    """`model: mlp, mlp_deep_tanh, mlp_large`, the option in use first."""
    lines = []
    for group in GROUPS:
        options = group_options(group)
        chosen = choices.get(group)
        if chosen in options:
            options.remove(chosen)
            options.insert(0, chosen)
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


def keys_text(cfg: DictConfig) -> str:
    """Every key of the app's config: `group.key=value   description`, group by group."""
    from vaelab.config import FREE_FORM, key_help

    described = key_help(every_option=True)
    lines = []
    for group in KEY_GROUPS:
        node = cfg.get(group)
        if node is None:
            continue
        lines.append(f"{group}: {FREE_FORM[group]}" if group in FREE_FORM else f"{group}:")
        target = node.get("_target_", "")
        for name in node:
            dotted = f"{group}.{name}"
            about = described.get(dotted) or (f"argument of {target}" if name != "_target_" else "the class")
            lines.append(f"  {f'{dotted}={shown(node, name)}':<38} {about}")
    return "\n".join(lines)


def shown(node: DictConfig, name: str) -> str:
    try:
        value = node[name]
    except Exception:  # noqa: BLE001 - an unresolvable value is shown as written
        value = OmegaConf.to_container(node, resolve=False)[name]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def help_body(*, _root_: DictConfig) -> str:
    choices = dict(_root_.hydra.runtime.choices) if "hydra" in _root_ else {}
    text = (
        "== Config groups ==\n"
        "Swap one with group=option (the default first, or the one you chose; a YAML file in conf/<group>/ adds one):\n\n"
        f"{groups_text(choices)}\n\n"
        "== Keys ==\n"
        "Override any key with group.key=value (shown: the value in use):\n\n"
        f"{keys_text(_root_)}"
    )
    return text.replace("$", "$$")  # Hydra passes the help through string.Template


def register_help_resolver() -> None:
    if not OmegaConf.has_resolver("vaelab_help"):
        OmegaConf.register_new_resolver("vaelab_help", help_body)
