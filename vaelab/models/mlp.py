"""The seed's MLP VAE: dense encoder and decoder of configurable width, depth and activation."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hydra.utils import get_class
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.vae import VAE


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers of the given widths, `activation` after every one."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x)))) from an MLP over the flat image."""

    def __init__(self, input_dim: int, hidden_dims: list[int], latent_dim: int, activation: type[nn.Module]):
        super().__init__()
        self.body = mlp([input_dim, *hidden_dims], activation)
        self.z_mean = nn.Linear(hidden_dims[-1], latent_dim)
        self.z_log_var = nn.Linear(hidden_dims[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, hidden)
        return self.z_mean(h), self.z_log_var(h)  # (B, latent_dim) each


class BernoulliDecoder(nn.Module):
    """An MLP from z to the likelihood's parameters per pixel (Bernoulli logits by default)."""

    def __init__(self, latent_dim: int, hidden_dims: list[int], output_dim: int, activation: type[nn.Module]):
        super().__init__()
        self.body = mlp([latent_dim, *hidden_dims], activation)
        self.logits = nn.Linear(hidden_dims[-1], output_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(self.body(z))  # (B, output_dim)


MLPDecoder = BernoulliDecoder  # the name says what it is now that the likelihood is a choice


class MLPVAE(VAE):
    """The seed's MLP VAE, widened by config: input-[hidden]*depth-latent and back, mirrored."""

    def __init__(
        self,
        input_dim: int | None = None,
        hidden_dim: int = 256,
        latent_dim: int = 2,
        depth: int = 1,
        activation: str = "torch.nn.ReLU",
        init: str | None = None,
        name: str = "mlp",  # noqa: ARG002 - a label for run names, kept in the config only
        image_shape: Sequence[int] = (1, 28, 28),  # (C, H, W), given by the data
        likelihood: nn.Module | None = None,
    ):
        input_dim = checked_input_dim(input_dim, image_shape)
        act = get_class(activation)
        hidden = [hidden_dim] * depth
        super().__init__(
            GaussianEncoder(input_dim, hidden, latent_dim, act),
            BernoulliDecoder(latent_dim, hidden, input_dim, act),
            likelihood,
            init,
        )


def checked_input_dim(input_dim: int | None, image_shape: Sequence[int]) -> int:
    """The flat image size from the data's shape; a configured input_dim must agree with it."""
    pixels = math.prod(image_shape)
    if input_dim is not None and input_dim != pixels:
        raise ConfigError(f"model.input_dim is {input_dim} but the data's images are {tuple(image_shape)}"
                          f" = {pixels} values; set model.input_dim=null to take it from the data")
    return pixels
