"""Typed config schemas, registered in Hydra's ConfigStore, and range checks.

The schemas make a misspelt key or a wrong type fail while Hydra composes the config, before
anything runs. `validate` adds the range checks that types cannot express; it raises
`ConfigError` with the offending key and value in a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from vaelab.errors import ConfigError

# Official MNIST, uncompressed IDX files in torchvision's layout, with their md5 sums.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

PRECISIONS = ("fp32", "bf16")
_ABSENT = object()


@dataclass
class DataConfig:
    """Keys every data source has; `_target_` picks the source (vaelab/data/sources.py)."""

    _target_: str = "vaelab.data.TorchvisionIdx"
    name: str = "mnist"
    limit: Optional[int] = None  # train on the first N images (smoke runs)
    test_limit: Optional[int] = None  # evaluate on the first N test images
    binarize: str = "none"  # none | dynamic (Bernoulli resampling per batch)
    binarize_seed: int = 0  # the fixed binarization of the test set under `dynamic`


@dataclass
class TorchvisionDataConfig(DataConfig):
    root: Optional[str] = None  # torchvision layout <root>/<folder>/raw; None: ~/.cache/vaelab
    folder: str = "MNIST"  # torchvision's class name: MNIST, FashionMNIST, KMNIST
    md5: dict[str, str] = field(default_factory=dict)  # file name -> md5 (IDX files or their .gz)
    verify: bool = True  # md5-check the files; tests with synthetic files turn it off
    download: Optional[str] = None  # torchvision class that downloads it, e.g. torchvision.datasets.MNIST
    offline: list[str] = field(default_factory=list)  # more fetchers (dotted paths) tried after it


@dataclass
class IdxDataConfig(DataConfig):
    _target_: str = "vaelab.data.IdxFiles"
    path: str = MISSING  # folder with {train,t10k}-images-idx3-ubyte (+ -labels-idx1-ubyte, optional)
    shape: Optional[list[int]] = None  # (C, H, W); None: (1, rows, cols) from the IDX header


@dataclass
class NpzDataConfig(DataConfig):
    _target_: str = "vaelab.data.NpzFile"
    path: str = MISSING  # .npz with x_train, x_test (+ y_train, y_test, optional)
    shape: list[int] = field(default_factory=lambda: [1, 28, 28])  # (C, H, W) of one image
    scale: float = 255.0  # the pixel value that means 1.0 (1.0 for floats already in [0, 1])


@dataclass
class ModelConfig:
    _target_: str = "vaelab.models.MLPVAE"
    name: str = "mlp"
    input_dim: Optional[int] = None  # None: from the data's image shape
    hidden_dim: int = 256
    depth: int = 1  # hidden layers in the encoder and, mirrored, in the decoder
    latent_dim: int = 2
    activation: str = "torch.nn.ReLU"
    init: Optional[str] = None  # None: torch's default; or a function applied to every module


@dataclass
class ConvModelConfig:
    _target_: str = "vaelab.models.ConvVAE"
    name: str = "conv"
    channels: list[int] = field(default_factory=lambda: [32, 64])  # Conv2d outputs; the decoder mirrors them
    kernels: list[int] = field(default_factory=lambda: [3, 3])
    strides: list[int] = field(default_factory=lambda: [2, 2])
    dense_dim: int = 16
    latent_dim: int = 2
    activation: str = "torch.nn.ReLU"
    init: Optional[str] = None


@dataclass
class LikelihoodConfig:
    _target_: str = "vaelab.likelihoods.Bernoulli"
    name: str = "bernoulli"


@dataclass
class ContinuousBernoulliConfig(LikelihoodConfig):
    _target_: str = "vaelab.likelihoods.ContinuousBernoulli"
    name: str = "continuous_bernoulli"
    taylor_below: float = 1e-2  # |logit| under which log C uses its Taylor series


@dataclass
class GaussianConfig(LikelihoodConfig):
    _target_: str = "vaelab.likelihoods.Gaussian"
    name: str = "gaussian"
    sigma: float = 0.1  # the fixed sigma, or the learned one's start
    learn_sigma: bool = False  # learn one sigma per pixel


@dataclass
class LossConfig:
    _target_: str = "vaelab.objectives.ELBO"
    name: str = "elbo"
    beta: float = 1.0  # weight of the KL term (Higgins et al. 2017); 1.0 is the plain ELBO


@dataclass
class IWAELossConfig(LossConfig):
    _target_: str = "vaelab.objectives.IWAE"
    name: str = "iwae"
    k: int = 5  # importance samples per image in the training bound


@dataclass
class KLConfig:
    _target_: str = "vaelab.kl_schedules.Constant"
    name: str = "constant"


@dataclass
class WarmupKLConfig(KLConfig):
    _target_: str = "vaelab.kl_schedules.Warmup"
    name: str = "warmup"
    epochs: float = 10.0  # beta rises linearly, step by step, over this many epochs


@dataclass
class CyclicalKLConfig(KLConfig):
    _target_: str = "vaelab.kl_schedules.Cyclical"
    name: str = "cyclical"
    cycles: int = 4
    ratio: float = 0.5  # share of each cycle spent rising from 0 to beta


@dataclass
class CapacityKLConfig(KLConfig):
    _target_: str = "vaelab.kl_schedules.Capacity"
    name: str = "capacity"
    gamma: float = 100.0
    c_max: float = 25.0  # nats
    fraction: float = 0.5  # share of training over which the capacity rises to c_max


@dataclass
class FreeBitsKLConfig(KLConfig):
    _target_: str = "vaelab.kl_schedules.FreeBits"
    name: str = "free_bits"
    floor: float = 0.5  # nats per latent dimension (Kingma et al.'s lambda)


# Each option's YAML starts from its schema: `defaults: [/schema/<group>/<name>@_here_, _self_]`.
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"torchvision": TorchvisionDataConfig, "idx": IdxDataConfig, "npz": NpzDataConfig},
    "model": {"mlp": ModelConfig, "conv": ConvModelConfig},
    "likelihood": {"bernoulli": LikelihoodConfig, "continuous_bernoulli": ContinuousBernoulliConfig,
                   "gaussian": GaussianConfig},
    "loss": {"elbo": LossConfig, "iwae": IWAELossConfig},
    "kl": {"constant": KLConfig, "warmup": WarmupKLConfig, "cyclical": CyclicalKLConfig,
           "capacity": CapacityKLConfig, "free_bits": FreeBitsKLConfig},
}


@dataclass
class TrainerConfig:
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int = 2000
    seed: int = 0
    device: str = "auto"  # auto (cuda -> mps -> cpu) | cpu | cuda | cuda:1 | mps
    precision: str = "fp32"  # fp32 | bf16 (autocast of the forward pass; losses stay float32)
    progress: bool = True
    progress_every: int = 50  # steps between refreshes of the running loss on the bar
    images_every: int = 1  # epochs between reconstruction grids (0: only at the end)
    iw_samples: int = 0  # k of the importance-weighted bound at the end (0: skip)
    iw_batch_size: int = 20  # test images per IW batch (each expands to k samples)
    threads: Optional[int] = None  # torch threads; None: all cores, shared out among parallel jobs
    checkpoint_every: int = 1  # epochs between checkpoints (0: none); the last epoch always has one
    resume: bool = True  # a re-run skips a finished config and continues an interrupted one; false: fresh
    retry_failed: bool = False  # re-run a config that failed for a real error (divergence, exception)


@dataclass
class ProbeConfig:
    """The linear probe at the end of a run (needs labels): test/probe_acc."""

    steps: int = 100  # L-BFGS iterations of the logistic regression; 0 skips the probe
    l2: float = 1.0e-4  # weight penalty


@dataclass
class TrackingConfig:
    _target_: str = "vaelab.tracking.MlflowTracker"
    uri: Optional[str] = None
    experiment: str = "vaelab"
    artifact_location: Optional[str] = None
    run_name: Optional[str] = None  # None: derived from the model and loss, e.g. mlp-h256-z2-b1.0
    parent_run_id: Optional[str] = None  # set by the sweep callback for --multirun jobs
    log_model: bool = True
    connect_timeout_s: float = 5.0  # an unreachable store is an error after this long, before training
    patience_s: float = 120.0  # how long a busy or failing store is retried before logging stops


@dataclass
class Config:
    data: Any = MISSING  # each option brings its schema (SCHEMAS below)
    model: Any = MISSING
    likelihood: Any = MISSING
    loss: Any = MISSING
    kl: Any = MISSING
    optimizer: Any = MISSING  # free-form: any torch.optim class with its own keyword arguments
    scheduler: Any = MISSING  # free-form: a torch.optim.lr_scheduler factory, stepped per epoch
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)


def register_configs() -> None:
    """Put the schema where config.yaml's defaults list finds it, and `${vaelab_home:}` in reach."""
    from vaelab.paths import register_resolver

    register_resolver()
    store = ConfigStore.instance()
    store.store(name="vaelab_schema", node=Config)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            store.store(group=f"schema/{group}", name=name, node=schema)


# (dotted key, predicate, description) — checked in order; the first failure is reported.
_RULES = (
    ("model.input_dim", lambda v: v is None or v >= 1, "null or >= 1"),
    ("model.hidden_dim", lambda v: v >= 1, ">= 1"),
    ("model.depth", lambda v: v >= 1, ">= 1"),
    ("model.latent_dim", lambda v: v >= 1, ">= 1"),
    ("model.dense_dim", lambda v: v >= 1, ">= 1"),
    ("loss.beta", lambda v: v >= 0, ">= 0"),
    ("loss.k", lambda v: v >= 1, ">= 1"),
    ("optimizer.lr", lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    ("trainer.epochs", lambda v: v >= 1, ">= 1"),
    ("trainer.batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.progress_every", lambda v: v >= 1, ">= 1"),
    ("trainer.images_every", lambda v: v >= 0, ">= 0"),
    ("trainer.iw_samples", lambda v: v >= 0, ">= 0"),
    ("trainer.iw_batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.threads", lambda v: v is None or v >= 1, "null or >= 1"),
    ("trainer.checkpoint_every", lambda v: v >= 0, ">= 0"),
    ("tracking.connect_timeout_s", lambda v: v is None or v > 0, "> 0"),
    ("tracking.patience_s", lambda v: v is None or v >= 0, ">= 0"),
    ("trainer.precision", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    ("probe.steps", lambda v: v >= 0, ">= 0"),
    ("data.limit", lambda v: v is None or v >= 1, "null or >= 1"),
    ("data.test_limit", lambda v: v is None or v >= 1, "null or >= 1"),
    ("data.binarize", lambda v: v in ("none", "dynamic"), "one of none, dynamic"),
)

_OPTION_KEYS = {"model.input_dim", "model.hidden_dim", "model.depth", "model.dense_dim", "loss.k"}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range: any number that is
    not finite (inf, nan), then the rules above."""
    for key, value in _numbers(OmegaConf.to_container(cfg, resolve=True)):
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    for key, ok, expected in _RULES:
        if key in _OPTION_KEYS and OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue  # a key of some options only (model.hidden_dim is not conv's): its schema decides
        value = _select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every float in a config tree, with its dotted key."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, float):
            yield name, value
        else:
            yield from _numbers(value, f"{name}.")


def _select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"{key} is required but missing from the config")
        node = node[part]
    return node
