"""Every selectable config composes and trains; bad configs fail before anything runs."""

import math
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import compose_config
from vaelab.data import raw_dir
from vaelab.paths import config_dir
from vaelab.app import run
from vaelab.building import build_optimizer
from vaelab.config import validate
from vaelab.errors import ConfigError

CONF = Path(config_dir())
OPTIONS = sorted(
    (group.name, yaml.stem) for group in CONF.iterdir() if group.is_dir() for yaml in group.glob("*.yaml")
)


def test_every_group_has_options():
    groups = {g for g, _ in OPTIONS}
    assert groups == {"data", "model", "likelihood", "loss", "kl", "optimizer", "scheduler", "trainer", "tracking",
                      "experiment"}


def needs(choice: str, mnist_root: Path, npz_path: Path) -> list[str]:
    """What an option needs beyond the tiny overrides: the user's-files data sets, a path."""
    return {"data=idx": [f"data.path={raw_dir(mnist_root)}"], "data=npz": [f"data.path={npz_path}"]}.get(choice, [])


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_config_composes_and_trains(group, option, tiny_cfg, tracked_cfg, mnist_root, npz_path):
    choice = f"{group}={option}"
    extra = needs(choice, mnist_root, npz_path)
    cfg = tracked_cfg(choice) if choice == "tracking=mlflow" else tiny_cfg(choice, *extra, "trainer.images_every=0")
    validate(cfg)
    loss = run(cfg)
    assert torch.isfinite(torch.tensor(loss))


def test_a_new_optimizer_is_one_yaml_file(tmp_path, tiny_cfg):
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "nadam.yaml").write_text(
        "_target_: torch.optim.NAdam\n_partial_: true\nlr: 2.0e-3\nmomentum_decay: 5.0e-3\n"
    )
    cfg = tiny_cfg("optimizer=nadam", f"hydra.searchpath=[file://{tmp_path}]")
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg.optimizer, model)
    assert isinstance(optimizer, torch.optim.NAdam) and optimizer.defaults["lr"] == 2e-3
    assert run(cfg) > 0


def test_the_seed_replica_uses_keras_rmsprop_defaults():
    cfg = compose_config("experiment=keras_seed")
    opt = build_optimizer(cfg.optimizer, torch.nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.RMSprop)
    assert (opt.defaults["lr"], opt.defaults["alpha"], opt.defaults["eps"]) == (1e-3, 0.9, 1e-7)
    assert (cfg.model.hidden_dim, cfg.model.latent_dim, cfg.trainer.batch_size, cfg.trainer.epochs) == (256, 2, 100, 50)


def test_the_pytorch_example_replica():
    cfg = compose_config("experiment=pytorch_example")
    assert (cfg.model.hidden_dim, cfg.model.latent_dim, cfg.trainer.batch_size, cfg.trainer.epochs) == (400, 20, 128, 10)
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3


@pytest.mark.parametrize("override", ["model.latnet_dim=3", "trainer.epoch=3"])
def test_a_misspelt_key_fails_at_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_config(override)


def test_a_misspelt_key_in_a_new_yaml_file_fails_at_composition(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "wide.yaml").write_text("defaults: [mlp]\nhiden_dim: 1024\n")
    with pytest.raises(ConfigCompositionException, match="hiden_dim"):
        compose_config("model=wide", f"hydra.searchpath=[file://{tmp_path}]")


@pytest.mark.parametrize("override", ["model.latent_dim=two", "trainer.batch_size=1.5", "loss.beta=high"])
def test_a_wrong_type_fails_at_composition(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(override)


@pytest.mark.parametrize(("override", "message"), [
    ("model.latent_dim=0", "model.latent_dim must be >= 1, got 0"),
    ("loss.beta=-1", "loss.beta must be >= 0, got -1.0"),
    ("optimizer.lr=0", "optimizer.lr must be a number > 0, got 0"),
    ("trainer.batch_size=0", "trainer.batch_size must be >= 1, got 0"),
    ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
    ("data.binarize=static", "data.binarize must be one of none, dynamic, got 'static'"),
])
def test_out_of_range_values_name_the_key_and_value(override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config(override))
    assert str(err.value) == message


def test_unknown_optimizer_argument_is_a_config_error(tiny_cfg):
    cfg = tiny_cfg("+optimizer.betas_typo=1")
    with pytest.raises(ConfigError, match="torch.optim.Adam could not be built"):
        build_optimizer(cfg.optimizer, torch.nn.Linear(2, 2))


def test_burda_schedule_stages():
    from vaelab.schedules import burda_factor

    factors = [burda_factor(e) for e in range(14)]
    assert factors[0] == 1.0
    assert factors[1:4] == [10 ** (-1 / 7)] * 3  # stage 1: 3 epochs
    assert factors[4:13] == [10 ** (-2 / 7)] * 9  # stage 2: 9 epochs
    assert factors[13] == 10 ** (-3 / 7)


def test_iwae_burda_replica():
    cfg = compose_config("experiment=iwae_burda")
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg.optimizer, model)
    assert opt.defaults["eps"] == 1e-4 and cfg.trainer.batch_size == 20
    assert (cfg.model.hidden_dim, cfg.model.depth, cfg.model.latent_dim, cfg.model.activation) == (200, 2, 50, "torch.nn.Tanh")
    assert cfg.data.binarize == "dynamic" and cfg.trainer.iw_samples == 5000


def test_a_new_data_set_is_one_yaml_file(tmp_path, npz_path):
    """The README's example: a user's .npz, named once in conf/data/."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my_digits.yaml").write_text(f"defaults: [npz]\npath: {npz_path}\nshape: [1, 28, 28]\n")
    cfg = compose_config("data=my_digits", f"hydra.searchpath=[file://{tmp_path}]", "trainer.epochs=1",
                         "trainer.progress=false", "tracking=none", "trainer.images_every=0")
    assert cfg.data._target_ == "vaelab.data.NpzFile" and cfg.data.path == str(npz_path)
    assert math.isfinite(run(cfg))


def test_elbo_warmup_is_elbo_with_kl_warmup():
    cfg = compose_config("loss=elbo_warmup")
    assert cfg.loss._target_ == "vaelab.objectives.ELBO" and cfg.kl._target_ == "vaelab.kl_schedules.Warmup"
    assert cfg.kl.epochs == 10 and cfg.loss.beta == 1.0


def test_keras_conv_replica():
    cfg = compose_config("experiment=keras_conv")
    assert cfg.model._target_ == "vaelab.models.ConvVAE"
    assert (list(cfg.model.channels), list(cfg.model.kernels), list(cfg.model.strides)) == ([32, 64], [3, 3], [2, 2])
    assert (cfg.model.dense_dim, cfg.model.latent_dim, cfg.trainer.batch_size, cfg.trainer.epochs) == (16, 2, 128, 30)
    opt = build_optimizer(cfg.optimizer, torch.nn.Linear(2, 2))
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["eps"] == 1e-7


@pytest.mark.parametrize("override", ["model=conv model.hidden_dim=3", "kl=cyclical kl.c_max=3", "likelihood=bernoulli likelihood.sigma=1"])
def test_keys_of_another_option_fail_at_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_config(*override.split())
