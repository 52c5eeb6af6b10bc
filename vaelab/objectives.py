"""Training objectives, one call per batch: `objective(model, x, step) -> ELBOTerms`.

The objective is chosen by `loss` (`_target_`) and holds the KL schedule (`kl`); it reads the
likelihood from the model. `step` is the global training step (from 1), so schedules resume
exactly. All terms are nats per image, averaged over the batch.
"""

from __future__ import annotations

import math

import torch

from vaelab.errors import ConfigError
from vaelab.kl_schedules import KLSchedule
from vaelab.losses import ELBOTerms, gaussian_kl_per_dim, log_normal_diag, log_normal_std
from vaelab.models import VAE, VAEOutput, autocast_forward


class ELBO:
    """The negative (beta-)ELBO: -log p(x|z) + the schedule's KL term (Kingma & Welling 2014)."""

    stackable = True  # its terms come from one forward pass (`combine`): `hydra/launcher=stacked` can batch it

    def __init__(self, kl: KLSchedule | None = None, beta: float = 1.0, name: str = "elbo"):
        self.kl = KLSchedule() if kl is None else kl
        self.beta = beta
        self.name = name

    def __call__(self, model: VAE, x: torch.Tensor, step: int, autocast: torch.dtype | None = None) -> ELBOTerms:
        return self.of(model, autocast_forward(model, x, autocast), x, step)

    def of(self, model: VAE, out: VAEOutput, x: torch.Tensor, step: int) -> ELBOTerms:
        """The terms of a forward pass `out` of `x` that was already made."""
        return self.combine(model.likelihood.nll(out.logits, x).mean(), gaussian_kl_per_dim(out.mu, out.logvar), step)

    def combine(self, recon: torch.Tensor, kl_dims: torch.Tensor, step: int) -> ELBOTerms:
        """The terms from the batch's mean reconstruction NLL () and the KL of each dimension (B, latent_dim)."""
        return ELBOTerms(recon + self.kl.term(kl_dims, step, self.beta), recon, kl_dims.sum(dim=-1).mean())

    def metrics(self, step: int) -> dict[str, float]:
        return self.kl.metrics(step, self.beta)


class IWAE(ELBO):
    """The importance-weighted bound as the objective (Burda et al. 2015, eq. 8) with `k` samples:
    -log mean_k p(x|z_k) p(z_k)^w / q(z_k|x)^w, w the schedule's KL weight (1: the true bound).
    `recon` and `kl` report the single-sample ELBO terms of the first sample."""

    stackable = False  # k samples through encoder and decoder apart: a stacked sweep trains it alone

    def __init__(self, kl: KLSchedule | None = None, beta: float = 1.0, k: int = 5, name: str = "iwae"):
        super().__init__(kl, beta, name)
        if k < 1:
            raise ConfigError(f"loss.k must be >= 1, got {k}")
        if not self.kl.weight_only:
            raise ConfigError(f"loss=iwae weights the KL inside the bound; kl={type(self.kl).__name__} does not")
        self.k = k

    def __call__(self, model: VAE, x: torch.Tensor, step: int, autocast: torch.dtype | None = None) -> ELBOTerms:
        with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
            mu, logvar = model.encoder(x)  # (B, L) each
            z = mu + torch.exp(0.5 * logvar) * torch.randn((self.k, *mu.shape), device=x.device)  # (k, B, L)
            params = model.decoder(z.reshape(-1, mu.shape[-1])).reshape(self.k, len(x), -1)  # (k, B, D)
        mu, logvar, z, params = mu.float(), logvar.float(), z.float(), params.float()
        log_px_z = -model.likelihood.nll(params, x.expand(self.k, -1, -1))  # (k, B)
        log_ratio = log_normal_std(z) - log_normal_diag(z, mu, logvar)  # (k, B): log p(z) - log q(z|x)
        w = self.kl.weight(step, self.beta)
        bound = torch.logsumexp(log_px_z + w * log_ratio, dim=0) - math.log(self.k)  # (B,)
        kl = gaussian_kl_per_dim(mu, logvar).sum(dim=-1).mean()
        return ELBOTerms(-bound.mean(), -log_px_z[0].mean(), kl)
