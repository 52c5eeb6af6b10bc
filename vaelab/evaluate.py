"""`python -m vaelab.evaluate run_id=<id> [k=5000]`: the IW bound of a finished run, logged back.

An entry point like `__main__`: it imports the library, nothing in the library imports it.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any

import torch
from omegaconf import DictConfig

from vaelab.config import untrusted
from vaelab.errors import ConfigError, VaelabError
from vaelab.metrics import iw_nll


def evaluate_run(cfg: DictConfig) -> float:
    """IW-NLL of a finished run's logged model on its own test set, logged back to that run."""
    from vaelab.building import build, prepare_data, resolve_device
    from vaelab.tracking import load_run, log_to_run

    device = resolve_device(cfg.device)
    spec, weights, params = load_run(cfg.tracking.uri, cfg.run_id)
    data = prepare_data(build("data", as_the_run_saw_it(cfg.data, params)), device)
    model = rebuild_model(spec, cfg.run_id)
    model.load_state_dict(weights)
    model.eval()
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    nll = iw_nll(model.to(device), data.test.x, cfg.k, cfg.batch_size, progress=True)
    seconds = time.perf_counter() - started
    print(f"run {cfg.run_id}: test/iw_nll = {nll:.2f} nats/image, k = {cfg.k} ({seconds:.0f}s on {device})")
    log_to_run(cfg.tracking.uri, cfg.run_id, {"test/iw_nll": nll, f"test/iw_nll_k{cfg.k}": nll, "time/iw_s": seconds},
               params={"iw.k": cfg.k})
    return nll


def rebuild_model(spec: dict[str, Any], run_id: str) -> torch.nn.Module:
    """The model `spec` (logged beside its weights) describes, untrained, on the CPU."""
    from omegaconf import OmegaConf

    from vaelab.building import build

    for name in untrusted(spec):  # instantiating it would run code the store chose
        raise ConfigError(f"run_id={run_id}: its logged model names {name}, which is not vaelab's or torch's: "
                          "refused")
    likelihood = build("likelihood", OmegaConf.create(spec["likelihood"]), dim=spec["dim"])
    return build("model", OmegaConf.create(spec["model"]), image_shape=spec["image_shape"], likelihood=likelihood)


def as_the_run_saw_it(data_cfg: DictConfig, params: dict[str, str]) -> DictConfig:
    """The data config with the run's own test-set settings (binarization, seed, limit)."""
    out = data_cfg.copy()
    out.binarize = params.get("data.binarize", "none")
    out.binarize_seed = int(params.get("data.binarize_seed", 0))
    limit = params.get("data.test_limit", "null")
    out.test_limit = None if limit in ("null", "None") else int(limit)
    return out


KEYS = {  # `--help`: evaluate's own keys, and those of the groups it shares with training that matter here
    "run_id": "the finished run to evaluate (its id: the UI, or the line a run ends with)",
    "k": "importance samples per image; k = 1 is the ELBO",
    "batch_size": "test images per batch (each expands to k samples, 500 at a time)",
    "device": "auto (CUDA if there is one), cpu, cuda, cuda:1, mps",
    "seed": "the sampling seed",
    "data.root": "where the run's data set is (binarization and test limit are the run's own)",
    "tracking.uri": "the store the run is in",
    "tracking.credentials": "a server's login: a file in MLflow's credentials format",
}


def help_text(*, _root_: DictConfig) -> str:
    from vaelab.help import shown

    lines = []
    for dotted, about in KEYS.items():
        *group, name = dotted.split(".")
        node = _root_[group[0]] if group else _root_
        lines.append(f"  {f'{dotted}={shown(node, name)}':<40} {about}")
    text = ("python -m vaelab.evaluate run_id=<id> [key=value ...]: the importance-weighted NLL (Burda et al.\n"
            "2015) of a finished run's model on the test set as that run saw it, logged back to the run.\n"
            "Its weights are read with weights_only=True and checked against their digest; nothing is unpickled.\n\n"
            "== Keys ==\n" + "\n".join(lines) + "\n\ndata=<option> picks the run's data set (default mnist).")
    return text.replace("$", "$$")  # Hydra passes the help through string.Template


def main() -> None:
    """`python -m vaelab.evaluate run_id=<id> [k=5000] [batch_size=20]`."""
    import hydra
    from omegaconf import OmegaConf

    from vaelab.config import register_configs
    from vaelab.paths import config_dir

    register_configs()
    if not OmegaConf.has_resolver("vaelab_evaluate_help"):
        OmegaConf.register_new_resolver("vaelab_evaluate_help", help_text)

    def task(cfg: DictConfig) -> float:
        from omegaconf import OmegaConf

        if OmegaConf.is_missing(cfg, "run_id"):
            print("vaelab.evaluate: error: which run? python -m vaelab.evaluate run_id=<run id> [k=5000]",
                  file=sys.stderr)
            sys.exit(2)
        try:
            return evaluate_run(cfg)
        except VaelabError as err:
            print(f"vaelab.evaluate: error: {err}", file=sys.stderr)
            sys.exit(2)

    try:
        hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")(task)()
    finally:
        gc.freeze()  # as vaelab's own exit: the last collection would walk torch's and MLflow's objects


if __name__ == "__main__":
    main()
