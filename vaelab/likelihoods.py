"""Likelihoods p(x|z) over pixels: each returns -log p(x|z) in nats summed over pixels, (B,).

A likelihood reads the decoder's output as its parameters (`params`, (B, D) or (..., B, D)):
logits for the Bernoulli family, the mean for the Gaussian. `mean(params)` is E[x|z], what
reconstructions and samples show. They are modules so that a learned sigma trains and saves with
the model; a new one is a class here (same two methods) and a file in conf/likelihood/.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelab import losses
from vaelab.errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


class Bernoulli(nn.Module):
    """-log Bernoulli(x | sigmoid(logits)); for grey levels, the binary cross-entropy of the seed."""

    def __init__(self, dim: int | None = None, name: str = "bernoulli"):  # noqa: ARG002 - same signature as all
        super().__init__()

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return losses.bernoulli_nll(params, x)  # (B,)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class ContinuousBernoulli(nn.Module):
    """The continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a density on [0, 1]:
    p(x|lam) = C(lam) lam^x (1 - lam)^(1 - x) with C(lam) = 2 atanh(1 - 2 lam) / (1 - 2 lam).

    With logits eta (lam = sigmoid(eta)), C = eta / tanh(eta / 2), which is 2 at eta = 0 and loses
    all precision near it; there we use its Taylor series, log C = log 2 + log(1 + eta^2/12 - eta^4/720).
    """

    def __init__(self, dim: int | None = None, taylor_below: float = 1e-2, name: str = "continuous_bernoulli"):  # noqa: ARG002
        super().__init__()
        self.taylor_below = taylor_below  # |eta| under which the series is used (error ~ eta^6 / 30240)

    def log_norm(self, eta: torch.Tensor) -> torch.Tensor:
        """log C(sigmoid(eta)) elementwise, stable for every eta."""
        a = eta.abs()
        near = a < self.taylor_below
        safe = torch.where(near, torch.ones_like(a), a)  # keeps the unused branch's gradient finite
        exact = torch.log(safe) - torch.log(torch.tanh(safe / 2))  # = log(eta / tanh(eta / 2)), even in eta
        e2 = eta.pow(2)
        series = math.log(2) + torch.log1p(e2 / 12 - e2.pow(2) / 720)
        return torch.where(near, series, exact)

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return losses.bernoulli_nll(params, x) - self.log_norm(params).sum(dim=-1)  # (B,)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x] = 1 / (1 - exp(-eta)) - 1 / eta, and 1/2 + eta/12 - eta^3/720 near eta = 0."""
        near = params.abs() < self.taylor_below
        safe = torch.where(near, torch.ones_like(params), params)
        exact = torch.sigmoid(safe) / torch.tanh(safe / 2) - 1 / safe  # sigmoid/tanh(eta/2) = 1/(1 - e^-eta)
        series = 0.5 + params / 12 - params.pow(3) / 720
        return torch.where(near, series, exact)


class Gaussian(nn.Module):
    """-log N(x | mean, sigma^2) per pixel, summed: sigma fixed by `sigma`, or learned per pixel
    (`learn_sigma`, starting from `sigma`). A density: its nats can be negative."""

    def __init__(self, dim: int | None = None, sigma: float = 1.0, learn_sigma: bool = False, name: str = "gaussian"):  # noqa: ARG002
        super().__init__()
        if sigma <= 0:
            raise ConfigError(f"likelihood.sigma must be > 0, got {sigma}")
        if learn_sigma and dim is None:
            raise ConfigError("likelihood.learn_sigma needs the number of pixels (dim)")
        log_sigma = torch.full((dim,) if learn_sigma else (), math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)  # (D,)
        else:
            self.register_buffer("log_sigma", log_sigma)  # ()

    def nll(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z2 = ((x - params) * torch.exp(-self.log_sigma)).pow(2)  # (B, D)
        return 0.5 * (z2 + 2 * self.log_sigma + LOG_2PI).sum(dim=-1)  # (B,)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


