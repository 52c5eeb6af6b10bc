"""What a run is built from its config: the device, the data, the model, the objective, the
optimizer and its LR schedule, each by `_target_` (`build`), a bad config one line."""

from __future__ import annotations

import math
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LRScheduler

from vaelab.data import Dataset, Source
from vaelab.errors import ConfigError, VaelabError
from vaelab.models import VAE
from vaelab.objectives import ELBO

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16}  # trainer.precision -> autocast dtype


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; anything else must be available as named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ConfigError(f"trainer.device={name!r} is not a device name: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={name!r} but CUDA is not available here; use auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"trainer.device={name!r} but MPS is not available here; use auto or cpu")
    return device


def prepare_data(source: Source, device: torch.device) -> Dataset:
    """The configured source (`build("data", cfg.data)`) loaded onto `device`."""
    data = source.load(device)
    print(f"data: {data.description}")
    return data


def build_model(cfg: DictConfig, data: Dataset) -> VAE:
    """The configured model around the configured likelihood, sized by the data's image shape."""
    likelihood = build("likelihood", cfg.likelihood, dim=data.dim)
    return build("model", cfg.model, image_shape=list(data.image_shape), likelihood=likelihood)


def model_spec(cfg: DictConfig, data: Dataset) -> dict[str, Any]:
    """What `build_model` needs to build this model again: logged beside its weights."""
    return {"model": OmegaConf.to_container(cfg.model, resolve=True),
            "likelihood": OmegaConf.to_container(cfg.likelihood, resolve=True),
            "image_shape": list(data.image_shape), "dim": data.dim}


def build_objective(cfg: DictConfig, data: Dataset) -> ELBO:
    """The objective (`loss`) with its KL schedule (`kl`), which knows the run's length in steps."""
    steps = math.ceil(len(data.train) / cfg.trainer.batch_size)
    kl = build("kl", cfg.kl, steps_per_epoch=steps, total_steps=steps * cfg.trainer.epochs)
    return build("loss", cfg.loss, kl=kl)


def build(group: str, node: DictConfig, *args: object, **kwargs: object):  # noqa: ANN201 - whatever _target_ names
    """Instantiate `node._target_` with its keys, `args` and `kwargs`; a failure is a one-line ConfigError."""
    try:
        return instantiate(node, _partial_=True)(*args, **kwargs)
    except VaelabError:
        raise
    except Exception as err:  # noqa: BLE001 - a bad config gets one line, not a traceback
        cause = err.__cause__ or err
        if isinstance(cause, VaelabError):  # says what is wrong itself
            raise cause from None
        raise ConfigError(f"{group} {node.get('_target_')} could not be built: {cause}") from None


def build_optimizer(opt_cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Instantiate the `_partial_` optimizer factory on the model's parameters."""
    return build("optimizer", opt_cfg, model.parameters())


def build_scheduler(sched_cfg: DictConfig, optimizer: torch.optim.Optimizer) -> LRScheduler:
    """Instantiate the `_partial_` learning-rate scheduler factory on the optimizer."""
    return build("scheduler", sched_cfg, optimizer)
