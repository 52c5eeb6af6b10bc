"""Typed config schemas, registered in Hydra's ConfigStore, and range checks.

The schemas make a misspelt key or a wrong type fail while Hydra composes the config, before
anything runs. `validate` adds the range checks that types cannot express; it raises
`ConfigError` with the offending key and value in a one-line message.
"""

from __future__ import annotations

import math
import re
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


def key(default: Any, help: str) -> Any:  # noqa: A002 - the word --help prints
    """A schema field with its one-line description, which `vaelab --help` prints."""
    return field(default=default, metadata={"help": help})


def key_factory(factory: Any, help: str) -> Any:  # noqa: A002
    """`key` for a mutable default (a list or dict), built fresh for every config."""
    return field(default_factory=factory, metadata={"help": help})


@dataclass
class DataConfig:
    """Keys every data source has; `_target_` picks the source (vaelab/data/sources.py)."""

    _target_: str = key("vaelab.data.TorchvisionIdx", "the class that builds it")
    name: str = key("mnist", "name of the data set, in run names and in the UI's Dataset column")
    limit: Optional[int] = key(None, "train on the first N training images (null: all 60,000)")
    test_limit: Optional[int] = key(None, "evaluate on the first N test images (null: all 10,000)")
    binarize: str = key("none", "none | dynamic (Bernoulli-resample every training batch)")
    binarize_seed: int = key(0, "seed of the one fixed binarization of the test set under dynamic")


@dataclass
class TorchvisionDataConfig(DataConfig):
    root: Optional[str] = key(None, "folder holding <folder>/raw (torchvision layout); null: ~/.cache/vaelab or $VAELAB_DATA")
    folder: str = key("MNIST", "torchvision's class name: MNIST, FashionMNIST, KMNIST")
    md5: dict[str, str] = key_factory(dict, "file name -> md5 (IDX files or their .gz)")
    verify: bool = key(True, "md5-check the files before use")
    download: Optional[str] = key(None, "torchvision class that downloads it, e.g. torchvision.datasets.MNIST")
    offline: list[str] = key_factory(list, "more fetchers (dotted paths) tried after it")


@dataclass
class IdxDataConfig(DataConfig):
    _target_: str = key("vaelab.data.IdxFiles", "the class that builds it")
    path: str = key(MISSING, "folder with {train,t10k}-images-idx3-ubyte (+ -labels-idx1-ubyte, optional)")
    shape: Optional[list[int]] = key(None, "(C, H, W); None: (1, rows, cols) from the IDX header")


@dataclass
class NpzDataConfig(DataConfig):
    _target_: str = key("vaelab.data.NpzFile", "the class that builds it")
    path: str = key(MISSING, ".npz with x_train, x_test (+ y_train, y_test, optional)")
    shape: list[int] = key_factory(lambda: [1, 28, 28], "(C, H, W) of one image")
    scale: float = key(255.0, "the pixel value that means 1.0 (1.0 for floats already in [0, 1])")


@dataclass
class ModelConfig:
    _target_: str = key("vaelab.models.MLPVAE", "the VAE class to build")
    name: str = key("mlp", "label of the architecture in run names")
    input_dim: Optional[int] = key(None, "pixels per image; null: from the data's image shape")
    hidden_dim: int = key(256, "units in each hidden layer")
    depth: int = key(1, "hidden layers in the encoder and, mirrored, in the decoder")
    latent_dim: int = key(2, "dimensions of z")
    activation: str = key("torch.nn.ReLU", "activation class between layers")
    init: Optional[str] = key(None, "function applied to every module to initialise it (null: torch's default)")


@dataclass
class ConvModelConfig:
    _target_: str = key("vaelab.models.ConvVAE", "the class that builds it")
    name: str = key("conv", "label in run names and in the UI")
    channels: list[int] = key_factory(lambda: [32, 64], "Conv2d outputs; the decoder mirrors them")
    kernels: list[int] = key_factory(lambda: [3, 3], "Conv2d kernel sizes, one per layer")
    strides: list[int] = key_factory(lambda: [2, 2], "Conv2d strides, one per layer")
    dense_dim: int = key(16, "units of the dense layer between the convolutions and z")
    latent_dim: int = key(2, "dimensions of z")
    activation: str = key("torch.nn.ReLU", "activation class between layers")
    init: Optional[str] = key(None, "function applied to every module to initialise it (null: torch's default)")


@dataclass
class LikelihoodConfig:
    _target_: str = key("vaelab.likelihoods.Bernoulli", "the class that builds it")
    name: str = key("bernoulli", "label in run names and in the UI")


@dataclass
class ContinuousBernoulliConfig(LikelihoodConfig):
    _target_: str = key("vaelab.likelihoods.ContinuousBernoulli", "the class that builds it")
    name: str = key("continuous_bernoulli", "label in run names and in the UI")
    taylor_below: float = key(1e-2, "|logit| under which log C uses its Taylor series")


@dataclass
class GaussianConfig(LikelihoodConfig):
    _target_: str = key("vaelab.likelihoods.Gaussian", "the class that builds it")
    name: str = key("gaussian", "label in run names and in the UI")
    sigma: float = key(0.1, "the fixed sigma, or the learned one's start")
    learn_sigma: bool = key(False, "learn one sigma per pixel")


@dataclass
class LossConfig:
    _target_: str = key("vaelab.objectives.ELBO", "the class that builds it")
    name: str = key("elbo", "label of the objective in run names")
    beta: float = key(1.0, "weight of the KL term (Higgins et al. 2017); 1.0 is the plain ELBO")


@dataclass
class IWAELossConfig(LossConfig):
    _target_: str = key("vaelab.objectives.IWAE", "the class that builds it")
    name: str = key("iwae", "label in run names and in the UI")
    k: int = key(5, "importance samples per image in the training bound")


@dataclass
class KLConfig:
    _target_: str = key("vaelab.kl_schedules.Constant", "the class that builds it")
    name: str = key("constant", "label in run names and in the UI")


@dataclass
class WarmupKLConfig(KLConfig):
    _target_: str = key("vaelab.kl_schedules.Warmup", "the class that builds it")
    name: str = key("warmup", "label in run names and in the UI")
    epochs: float = key(10.0, "beta rises linearly, step by step, over this many epochs")


@dataclass
class CyclicalKLConfig(KLConfig):
    _target_: str = key("vaelab.kl_schedules.Cyclical", "the class that builds it")
    name: str = key("cyclical", "label in run names and in the UI")
    cycles: int = key(4, "number of cycles over training")
    ratio: float = key(0.5, "share of each cycle spent rising from 0 to beta")


@dataclass
class CapacityKLConfig(KLConfig):
    _target_: str = key("vaelab.kl_schedules.Capacity", "the class that builds it")
    name: str = key("capacity", "label in run names and in the UI")
    gamma: float = key(100.0, "weight of |KL - C|")
    c_max: float = key(25.0, "nats")
    fraction: float = key(0.5, "share of training over which the capacity rises to c_max")


@dataclass
class FreeBitsKLConfig(KLConfig):
    _target_: str = key("vaelab.kl_schedules.FreeBits", "the class that builds it")
    name: str = key("free_bits", "label in run names and in the UI")
    floor: float = key(0.5, "nats per latent dimension (Kingma et al.'s lambda)")


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
    epochs: int = key(30, "passes over the training set")
    batch_size: int = key(128, "training images per step")
    eval_batch_size: int = key(2000, "test images per evaluation batch")
    seed: int = key(0, "seed of initialisation, shuffling and sampling")
    device: str = key("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps")
    precision: str = key("fp32", "fp32 | bf16 (autocast of the forward pass; losses stay float32)")
    progress: bool = key(True, "show a progress bar per epoch (on a terminal only)")
    progress_every: int = key(50, "steps between refreshes of the running loss on the bar")
    images_every: int = key(1, "epochs between the per-epoch pictures in MLflow (0: only the last epoch)")
    iw_samples: int = key(0, "k of the importance-weighted bound on log p(x) at the end (0: skip)")
    iw_batch_size: int = key(20, "test images per IW batch (each expands to k samples)")
    threads: Optional[int] = key(None, "torch threads; null: all cores, shared out among parallel jobs (joblib)")
    checkpoint_every: int = key(1, "epochs between checkpoints (0: none); the last epoch always gets one")
    resume: bool = key(True, "a re-run skips a finished config and continues an interrupted one; false: a fresh run")
    retry_failed: bool = key(False, "re-run a config that failed for a real error (divergence, exception)")
    restart: bool = key(False, "continue an interrupted run from epoch 0, into the same run, when none of its checkpoints can be read")


@dataclass
class ProbeConfig:
    """The linear probe at the end of a run (needs labels): test/probe_acc."""

    steps: int = key(100, "L-BFGS iterations of the logistic regression; 0 skips the probe")
    l2: float = key(1.0e-4, "weight penalty")


@dataclass
class TrackingConfig:
    _target_: str = key("vaelab.tracking.MlflowTracker", "the tracker: MlflowTracker, or NullTracker (tracking=none)")
    uri: Optional[str] = key(None, "MLflow tracking URI (default: the SQLite store in vaelab's home)")
    experiment: str = key("vaelab", "MLflow experiment the runs go to")
    artifact_location: Optional[str] = key(None, "artifact folder of a new experiment")
    run_name: Optional[str] = key(None, "null: derived, e.g. mlp-h256-z2-b1.0, or in a sweep the values it varies")
    parent_run_id: Optional[str] = key(None, "the sweep's parent run; set for you by --multirun")
    log_model: bool = key(True, "log the trained model (with its test metrics) to MLflow")
    credentials: Optional[str] = key(None, "a server's login: a file in MLflow's credentials format (make server's)")
    ui_url: Optional[str] = key(None, "UI address in the end-of-run link (null: the server at uri, else vaelab ui's)")
    connect_timeout_s: float = key(5.0, "seconds an unreachable store gets before it is a one-line error, before training")
    patience_s: float = key(120.0, "seconds a busy or failing store is retried; then training goes on unlogged")


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


# Groups whose keys depend on the option chosen (any torch class and its arguments).
FREE_FORM = {
    "optimizer": "any torch.optim class (_target_) and its keyword arguments",
    "scheduler": "a torch.optim.lr_scheduler factory (_target_) and its arguments, stepped per epoch",
}
DEFAULT_OPTIONS = {"data": "torchvision", "model": "mlp", "likelihood": "bernoulli", "loss": "elbo", "kl": "constant"}


def key_help(every_option: bool = False) -> dict[str, str]:
    """`group.key` -> its one-line description, read from the schemas above: the keys of the
    default config, or (`every_option`) those of every option's schema too."""
    from dataclasses import MISSING as NO_FACTORY
    from dataclasses import fields

    schemas = [(f.name, f.default_factory) for f in fields(Config) if f.default_factory is not NO_FACTORY]
    for group, options in SCHEMAS.items():
        schemas += [(group, schema) for name, schema in options.items()
                    if every_option or name == DEFAULT_OPTIONS.get(group)]
    out: dict[str, str] = {}
    for group, schema in schemas:
        for f in fields(schema):
            out.setdefault(f"{group}.{f.name}", f.metadata.get("help", ""))
    return out


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


# What a config read back from a store may name: vaelab's classes, torch's layers and optimizers and
# torchvision's data sets (their download).
# Instantiating anything else would run code the store chose (`vaelab.evaluate`, `vaelab reproduce`).
TRUSTED = ("vaelab.", "torch.nn.", "torch.optim.", "torchvision.datasets.")
DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def untrusted(tree: Any) -> Iterator[str]:
    """Every dotted name in `tree` (a `_target_`, an activation class, ...) outside TRUSTED."""
    if isinstance(tree, dict):
        for value in tree.values():
            yield from untrusted(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from untrusted(value)
    elif isinstance(tree, str) and DOTTED.fullmatch(tree) and not tree.startswith(TRUSTED):
        yield tree
