"""Typed config schemas, registered in Hydra's ConfigStore, and range checks.

The schemas make a misspelt key or a wrong type fail while Hydra composes the config, before
anything runs. `validate` adds the range checks that types cannot express; it raises
`ConfigError` with the offending key and value in a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from vaelab.errors import ConfigError

# Official MNIST, uncompressed IDX files in torchvision's layout, with their md5 sums.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

PRECISIONS = ("fp32", "bf16")


@dataclass
class DataConfig:
    name: str = "mnist"
    root: Optional[str] = None  # torchvision layout <root>/MNIST/raw; None: ~/.cache/vaelab
    verify: bool = True  # md5-check the four files; tests with synthetic files turn it off
    limit: Optional[int] = None  # train on the first N images (smoke runs)
    test_limit: Optional[int] = None  # evaluate on the first N test images
    binarize: str = "none"  # none | dynamic (Bernoulli resampling per batch)
    binarize_seed: int = 0  # the fixed binarization of the test set under `dynamic`


@dataclass
class ModelConfig:
    _target_: str = "vaelab.models.MLPVAE"
    name: str = "mlp"
    input_dim: int = 784
    hidden_dim: int = 256
    depth: int = 1  # hidden layers in the encoder and, mirrored, in the decoder
    latent_dim: int = 2
    activation: str = "torch.nn.ReLU"
    init: Optional[str] = None  # None: torch's default; or a function applied to every module


@dataclass
class LossConfig:
    name: str = "elbo"
    beta: float = 1.0  # weight of the KL term (Higgins et al. 2017); 1.0 is the plain ELBO
    warmup_epochs: int = 0  # linear KL warm-up from 0 to beta over this many epochs


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


@dataclass
class TrackingConfig:
    _target_: str = "vaelab.tracking.MlflowTracker"
    uri: Optional[str] = None
    experiment: str = "vaelab"
    artifact_location: Optional[str] = None
    run_name: Optional[str] = None  # None: derived from the model and loss, e.g. mlp-h256-z2-b1.0
    parent_run_id: Optional[str] = None  # set by the sweep callback for --multirun jobs
    log_model: bool = True
    ui_url: Optional[str] = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: Any = MISSING  # free-form: any torch.optim class with its own keyword arguments
    scheduler: Any = MISSING  # free-form: a torch.optim.lr_scheduler factory, stepped per epoch
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def register_configs() -> None:
    """Put the schema where config.yaml's defaults list finds it, and `${vaelab_home:}` in reach."""
    from vaelab.paths import register_resolver

    register_resolver()
    ConfigStore.instance().store(name="vaelab_schema", node=Config)


# (dotted key, predicate, description) — checked in order; the first failure is reported.
_RULES = (
    ("model.input_dim", lambda v: v >= 1, ">= 1"),
    ("model.hidden_dim", lambda v: v >= 1, ">= 1"),
    ("model.depth", lambda v: v >= 1, ">= 1"),
    ("model.latent_dim", lambda v: v >= 1, ">= 1"),
    ("loss.beta", lambda v: v >= 0, ">= 0"),
    ("loss.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("optimizer.lr", lambda v: isinstance(v, (int, float)) and v > 0, "a number > 0"),
    ("trainer.epochs", lambda v: v >= 1, ">= 1"),
    ("trainer.batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.progress_every", lambda v: v >= 1, ">= 1"),
    ("trainer.images_every", lambda v: v >= 0, ">= 0"),
    ("trainer.iw_samples", lambda v: v >= 0, ">= 0"),
    ("trainer.iw_batch_size", lambda v: v >= 1, ">= 1"),
    ("trainer.precision", lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    ("data.limit", lambda v: v is None or v >= 1, "null or >= 1"),
    ("data.test_limit", lambda v: v is None or v >= 1, "null or >= 1"),
    ("data.binarize", lambda v: v in ("none", "dynamic"), "one of none, dynamic"),
)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    for key, ok, expected in _RULES:
        value = _select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key} must be {expected}, got {value!r}")


def _select(cfg: DictConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"{key} is required but missing from the config")
        node = node[part]
    return node
