"""VAE models: pure tensors in, tensors out. No loss, no I/O, no printing."""

from __future__ import annotations

from typing import NamedTuple

import torch
from hydra.utils import get_class, get_method
from torch import nn


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (B, input_dim) Bernoulli logits of p(x|z)
    mu: torch.Tensor  # (B, latent_dim) mean of q(z|x)
    logvar: torch.Tensor  # (B, latent_dim) log-variance of q(z|x)
    z: torch.Tensor  # (B, latent_dim) reparameterised sample


def mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers of the given widths, `activation` after every one."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mu(x), diag(exp(logvar(x))))."""

    def __init__(self, input_dim: int, hidden_dims: list[int], latent_dim: int, activation: type[nn.Module]):
        super().__init__()
        self.body = mlp([input_dim, *hidden_dims], activation)
        self.z_mean = nn.Linear(hidden_dims[-1], latent_dim)
        self.z_log_var = nn.Linear(hidden_dims[-1], latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, hidden)
        return self.z_mean(h), self.z_log_var(h)  # (B, latent_dim) each


class BernoulliDecoder(nn.Module):
    """p(x|z) = Bernoulli(sigmoid(logits(z))); returns logits for a numerically stable loss."""

    def __init__(self, latent_dim: int, hidden_dims: list[int], output_dim: int, activation: type[nn.Module]):
        super().__init__()
        self.body = mlp([latent_dim, *hidden_dims], activation)
        self.logits = nn.Linear(hidden_dims[-1], output_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(self.body(z))  # (B, output_dim)


class VAE(nn.Module):
    """Encoder, reparameterised sample, decoder (Kingma & Welling 2014)."""

    def __init__(self, encoder: GaussianEncoder, decoder: BernoulliDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    @property
    def latent_dim(self) -> int:
        return self.encoder.z_mean.out_features

    def forward(self, x: torch.Tensor) -> VAEOutput:
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar)
        return VAEOutput(self.decoder(z), mu, logvar, z)


def autocast_forward(model: VAE, x: torch.Tensor, dtype: torch.dtype | None = None) -> VAEOutput:
    """The forward pass under autocast to `dtype` (e.g. bfloat16), outputs back in float32."""
    if dtype is None:
        return model(x)
    with torch.autocast(x.device.type, dtype=dtype):
        out = model(x)
    return VAEOutput(*(t.float() for t in out))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I), differentiable in mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class MLPVAE(VAE):
    """The seed's MLP VAE, widened by config: input-[hidden]*depth-latent and back, mirrored."""

    def __init__(
        self,
        input_dim: int = 784,
        hidden_dim: int = 256,
        latent_dim: int = 2,
        depth: int = 1,
        activation: str = "torch.nn.ReLU",
        init: str | None = None,
        name: str = "mlp",  # noqa: ARG002 - a label for run names, kept in the config only
    ):
        act = get_class(activation)
        hidden = [hidden_dim] * depth
        super().__init__(
            GaussianEncoder(input_dim, hidden, latent_dim, act),
            BernoulliDecoder(latent_dim, hidden, input_dim, act),
        )
        if init is not None:  # a function applied to every module, e.g. vaelab.models.keras_init
            self.apply(get_method(init))


def keras_init(module: nn.Module) -> None:
    """Keras' Dense defaults: Glorot-uniform kernels, zero biases (torch: Kaiming-uniform, both)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
