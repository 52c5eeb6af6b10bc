"""The VAE that composes an encoder, a decoder and a likelihood: tensors in, tensors out."""

from __future__ import annotations

from typing import NamedTuple

import torch
from hydra.utils import get_method
from torch import nn

from vaelab.likelihoods import Bernoulli


class VAEOutput(NamedTuple):
    logits: torch.Tensor  # (B, D) the decoder's parameters of p(x|z), e.g. Bernoulli logits
    mu: torch.Tensor  # (B, latent_dim) mean of q(z|x)
    logvar: torch.Tensor  # (B, latent_dim) log-variance of q(z|x)
    z: torch.Tensor  # (B, latent_dim) reparameterised sample


class VAE(nn.Module):
    """Encoder, reparameterised sample, decoder (Kingma & Welling 2014); the likelihood p(x|z)
    rides along so that its own parameters (a learned sigma) train and save with the model."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module | None = None,
                 init: str | None = None):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = Bernoulli() if likelihood is None else likelihood
        if init is not None:  # a function applied to every module, e.g. vaelab.models.keras_init
            self.apply(get_method(init))

    @property
    def latent_dim(self) -> int:
        return self.encoder.z_mean.out_features

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None) -> VAEOutput:
        """`eps`: the standard-normal noise of the sample, (B, latent_dim); None draws it."""
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar, eps)
        return VAEOutput(self.decoder(z), mu, logvar, z)


def autocast_forward(model: VAE, x: torch.Tensor, dtype: torch.dtype | None = None,
                     eps: torch.Tensor | None = None) -> VAEOutput:
    """The forward pass under autocast to `dtype` (e.g. bfloat16), outputs back in float32."""
    if dtype is None:
        return model(x, eps)
    with torch.autocast(x.device.type, dtype=dtype):
        out = model(x, eps)
    return VAEOutput(*(t.float() for t in out))


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) (drawn here unless given), differentiable in mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if eps is None else eps)


def keras_init(module: nn.Module) -> None:
    """Keras' Dense and Conv defaults: Glorot-uniform kernels, zero biases (torch: Kaiming-uniform)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
