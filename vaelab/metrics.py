"""Evaluation: test ELBO, latent statistics, the importance-weighted log-likelihood bound.

Library code: `python -m vaelab.evaluate` (the command) sits on top of it."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from vaelab.losses import gaussian_kl_per_dim, log_normal_diag, log_normal_std
from vaelab.models import VAE, autocast_forward
from vaelab.objectives import ELBO

PLAIN_ELBO = ELBO()  # beta = 1, constant: the bound every run is measured by


@torch.inference_mode()
def evaluate_elbo(
    model: VAE, x: torch.Tensor, batch_size: int = 2000, autocast: torch.dtype | None = None
) -> tuple[dict[str, float], torch.Tensor]:
    """Negative ELBO (beta = 1) and its terms on `x`, in nats per image, one z sample each:
    the training objective's own formula, whatever beta and KL schedule the run trains with.
    Also the posterior means of `x` from the same pass (N, latent_dim), for the latent scatter:
    `encode_means`' own under float32, the autocast pass's (as float32) under `autocast`."""
    model.eval()
    sums = torch.zeros(3, device=x.device)
    means = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]  # (B, D)
        out = autocast_forward(model, xb, autocast)
        sums += torch.stack(PLAIN_ELBO.of(model, out, xb, 1)) * len(xb)
        means.append(out.mu)
    loss, recon, kl = (sums / len(x)).tolist()
    return {"loss": loss, "recon": recon, "kl": kl}, torch.cat(means)


@torch.inference_mode()
def encode_means(model: VAE, x: torch.Tensor, batch_size: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances of q(z|x), each (N, latent_dim)."""
    model.eval()
    parts = [model.encoder(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.inference_mode()
def reconstruct(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """Mean reconstructions through z = mu: the likelihood's mean E[x|z], (B, D)."""
    model.eval()
    mu, _ = model.encoder(x)
    return model.likelihood.mean(model.decoder(mu))


@torch.inference_mode()
def decode(model: VAE, z: torch.Tensor) -> torch.Tensor:
    """The likelihood's mean E[x|z] for given latents (B, D)."""
    model.eval()
    return model.likelihood.mean(model.decoder(z))


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean KL of each latent dimension over the data set, (latent_dim,)."""
    return gaussian_kl_per_dim(mu, logvar).mean(dim=0)


def active_units(mu: torch.Tensor, logvar: torch.Tensor, threshold: float = 0.01) -> int:
    """Dimensions that carry information: mean KL above `threshold` nats."""
    return int((kl_per_dimension(mu, logvar) > threshold).sum())


@torch.inference_mode()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int, chunk: int = 500) -> torch.Tensor:
    """Importance-weighted bound log p(x) >= log mean_k p(x, z_k) / q(z_k|x), (B,).

    Burda et al. 2015, eq. 8; k = 1 is the ELBO, and the bound tightens as k grows. The k samples
    are drawn `chunk` at a time and merged with a running logsumexp, so memory is independent of k.
    """
    model.eval()
    mu, logvar = model.encoder(x)  # (B, L) each
    running = torch.full((len(x),), -math.inf, device=x.device)
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        eps = torch.randn((n, *mu.shape), device=x.device)  # (n, B, L)
        z = mu + torch.exp(0.5 * logvar) * eps  # (n, B, L)
        logits = model.decoder(z.reshape(-1, mu.shape[-1])).reshape(n, len(x), -1)  # (n, B, D)
        log_px_z = -model.likelihood.nll(logits, x.expand(n, -1, -1))  # (n, B)
        log_w = log_px_z + log_normal_std(z) - log_normal_diag(z, mu, logvar)  # (n, B)
        running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
    return running - math.log(k)


def iw_nll(
    model: VAE, x: torch.Tensor, k: int, batch_size: int = 20, chunk: int = 500, progress: bool = False
) -> float:
    """Mean importance-weighted negative log-likelihood over `x`, nats per image."""
    total = 0.0
    starts = range(0, len(x), batch_size)
    for start in tqdm(starts, desc=f"IW bound, k={k}", disable=None if progress else True, leave=False):
        total -= iw_log_likelihood(model, x[start : start + batch_size], k, chunk).sum().item()
    return total / len(x)
