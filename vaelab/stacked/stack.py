"""K models of one shape trained as one: their parameters stacked along a leading member axis, and
one forward and backward pass for all under `torch.func.vmap` (`functional_call` on a template).

Each member keeps its own VAE, whose nn.Parameters are views of its slice of the stacked tensors.
Its own torch optimizer (its learning rate, betas, weight decay and LR schedule) updates them in
place, exactly as it would alone, and its evaluation, pictures, checkpoint and logged model read
them. What stacking saves is everything around the arithmetic: one launch of each operator for K
members, one step of Python, one process.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from vaelab.losses import gaussian_kl_per_dim
from vaelab.models import VAE, autocast_forward


class _Terms(nn.Module):
    """What the objective needs of one batch: the mean reconstruction NLL and the KL of each
    dimension, computed as `ELBO.__call__` does (the likelihood's own parameters included), and
    the posterior means (for the latent scatter, when it is the test set)."""

    def __init__(self, vae: VAE, autocast: torch.dtype | None) -> None:
        super().__init__()
        self.vae, self.autocast = vae, autocast

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = autocast_forward(self.vae, x, self.autocast, eps)
        return self.vae.likelihood.nll(out.logits, x).mean(), gaussian_kl_per_dim(out.mu, out.logvar), out.mu


class Stack:
    """The parameters of `models` (same architecture) as stacked leaf tensors (K, ...); each
    model's parameters become views of its slice. Build it again when the members change."""

    def __init__(self, models: Sequence[VAE], autocast: torch.dtype | None = None) -> None:
        template = models[0]
        self.names = [name for name, _ in template.named_parameters()]
        self.params = {f"vae.{n}": torch.stack([m.get_parameter(n).detach() for m in models]).requires_grad_()
                       for n in self.names}
        self.buffers = {f"vae.{n}": torch.stack([m.get_buffer(n) for m in models])
                        for n, _ in template.named_buffers()}
        self.members = [[m.get_parameter(n) for n in self.names] for m in models]
        for k, params in enumerate(self.members):
            for name, param in zip(self.names, params):
                param.data = self.params[f"vae.{name}"].detach()[k]  # shares the stack's storage
        terms = _Terms(copy.deepcopy(template), autocast).train()

        def one(params: dict, buffers: dict, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return functional_call(terms, (params, buffers), (x, eps))

        # randomness="error": the noise comes in (`eps`, each member's own stream), never drawn inside
        self._terms = vmap(one, randomness="error")
        self._shared = vmap(one, in_dims=(0, 0, None, 0), randomness="error")  # one x for every member

    def __len__(self) -> int:
        return len(self.members)

    def terms(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (K, B, D), eps (K, B, latent_dim) -> recon (K,), kl_dims (K, B, latent_dim)."""
        return self._terms(self.params, self.buffers, x, eps)[:2]

    @torch.inference_mode()
    def evaluate(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch x (B, D) through every member, eps (K, B, latent_dim) -> recon (K,),
        kl_dims (K, B, latent_dim), posterior means (K, B, latent_dim); no graph kept."""
        return self._shared(self.params, self.buffers, x, eps)

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate the members' summed loss; each member's parameters get their slice of the gradient."""
        for p in self.params.values():
            p.grad = None
        loss.backward()
        grads = [self.params[f"vae.{n}"].grad for n in self.names]
        for k, params in enumerate(self.members):
            for param, grad in zip(params, grads):
                param.grad = grad[k]
