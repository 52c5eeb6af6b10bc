"""Loss terms as free functions. Per image: summed over pixels or latent dimensions, in nats."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class ELBOTerms(NamedTuple):
    loss: torch.Tensor  # () recon + beta * kl, averaged over the batch: the training objective
    recon: torch.Tensor  # () -log p(x|z), nats per image
    kl: torch.Tensor  # () KL(q(z|x) || N(0, I)), nats per image


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x | sigmoid(logits)) summed over pixels, (B,); stable for any logit.

    For grey-level x in [0, 1] this is the binary cross-entropy the seed and pytorch/examples use.
    torch's fused kernel is kept: on this AVX2 CPU it beat relu(l) - x*l + log1p(exp(-|l|)),
    softplus(l) - x*l and a one-node autograd Function, forward and backward (docs/performance.md).
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in closed form, (B,) (Kingma & Welling 2014, App. B)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=-1)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """The same KL, kept per latent dimension, (B, latent_dim)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def elbo_terms(
    logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float = 1.0
) -> ELBOTerms:
    """Negative (beta-)ELBO and its terms, each averaged over the batch."""
    recon = bernoulli_nll(logits, x).mean()
    kl = gaussian_kl(mu, logvar).mean()
    return ELBOTerms(recon + beta * kl, recon, kl)


def log_normal_std(z: torch.Tensor) -> torch.Tensor:
    """log N(z | 0, I) summed over the last dimension."""
    return -0.5 * (z.pow(2) + torch.log(torch.tensor(2 * torch.pi, device=z.device))).sum(dim=-1)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z | mu, diag(exp(logvar))) summed over the last dimension."""
    log2pi = torch.log(torch.tensor(2 * torch.pi, device=z.device))
    return -0.5 * (log2pi + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)
