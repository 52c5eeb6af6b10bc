"""A convolutional VAE: Conv2d stack -> dense -> (mu, logvar), mirrored by ConvTranspose2d.

Images travel flat, (B, C*H*W), as for every model; the convolutional parts reshape at their
edges, so losses, plots and the loop never know which model they serve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from hydra.utils import get_class
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.vae import VAE


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Spatial size after a Conv2d with 'same'-style padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


class ConvEncoder(nn.Module):
    """q(z|x): Conv2d(channels[i], kernels[i], strides[i]) + activation each, flatten, dense, heads."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int], kernels: Sequence[int],
                 strides: Sequence[int], dense_dim: int, latent_dim: int, activation: type[nn.Module]):
        super().__init__()
        self.image_shape = tuple(image_shape)  # (C, H, W)
        layers: list[nn.Module] = []
        fan_in, (h, w) = image_shape[0], image_shape[1:]
        for c, k, s in zip(channels, kernels, strides):
            layers += [nn.Conv2d(fan_in, c, k, s, padding=k // 2), activation()]
            fan_in, h, w = c, conv_out(h, k, s), conv_out(w, k, s)
        self.feature_shape = (fan_in, h, w)  # what the decoder's dense layer must produce
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(math.prod(self.feature_shape), dense_dim), activation())
        self.z_mean = nn.Linear(dense_dim, latent_dim)
        self.z_log_var = nn.Linear(dense_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x.view(-1, *self.image_shape))  # (B, dense_dim)
        return self.z_mean(h), self.z_log_var(h)  # (B, latent_dim) each


class ConvDecoder(nn.Module):
    """p(x|z): dense to the encoder's feature map, then the encoder's convolutions transposed in
    reverse order (same channels, kernels, strides), then one stride-1 layer to the image channels."""

    def __init__(self, encoder: ConvEncoder, channels: Sequence[int], kernels: Sequence[int],
                 strides: Sequence[int], latent_dim: int, activation: type[nn.Module]):
        super().__init__()
        self.feature_shape = encoder.feature_shape
        sizes = self._spatial_sizes(encoder.image_shape[1:], kernels, strides)  # encoder's, input first
        layers: list[nn.Module] = [nn.Linear(latent_dim, math.prod(self.feature_shape)), activation(),
                                   nn.Unflatten(1, self.feature_shape)]
        fan_in = self.feature_shape[0]
        for i in reversed(range(len(channels))):
            k, s = kernels[i], strides[i]
            (h_in, w_in), (h_out, w_out) = sizes[i + 1], sizes[i]
            pad = (h_out - ((h_in - 1) * s - 2 * (k // 2) + k), w_out - ((w_in - 1) * s - 2 * (k // 2) + k))
            layers += [nn.ConvTranspose2d(fan_in, channels[i], k, s, padding=k // 2, output_padding=pad), activation()]
            fan_in = channels[i]
        k = kernels[0]
        layers.append(nn.ConvTranspose2d(fan_in, encoder.image_shape[0], k, 1, padding=k // 2))
        self.body = nn.Sequential(*layers, nn.Flatten())

    @staticmethod
    def _spatial_sizes(hw: Sequence[int], kernels: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
        sizes = [tuple(hw)]
        for k, s in zip(kernels, strides):
            sizes.append(tuple(conv_out(v, k, s) for v in sizes[-1]))
        return sizes

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)  # (B, C*H*W)


class ConvVAE(VAE):
    """The keras-io convolutional VAE and its relatives: every size a config key."""

    def __init__(
        self,
        channels: Sequence[int] = (32, 64),
        kernels: Sequence[int] = (3, 3),
        strides: Sequence[int] = (2, 2),
        dense_dim: int = 16,
        latent_dim: int = 2,
        activation: str = "torch.nn.ReLU",
        init: str | None = None,
        name: str = "conv",  # noqa: ARG002 - a label for run names, kept in the config only
        image_shape: Sequence[int] = (1, 28, 28),  # (C, H, W), given by the data
        likelihood: nn.Module | None = None,
    ):
        if not len(channels) == len(kernels) == len(strides) >= 1:
            raise ConfigError(f"model.channels, model.kernels and model.strides must have the same length >= 1,"
                              f" got {list(channels)}, {list(kernels)}, {list(strides)}")
        if len(image_shape) != 3:
            raise ConfigError(f"model=conv needs images of shape (C, H, W), got {tuple(image_shape)}")
        act = get_class(activation)
        encoder = ConvEncoder(image_shape, channels, kernels, strides, dense_dim, latent_dim, act)
        decoder = ConvDecoder(encoder, channels, kernels, strides, latent_dim, act)
        super().__init__(encoder, decoder, likelihood, init)
