"""How the KL term enters the objective over training: pure functions of the global step.

Every schedule is built with the run's length (`steps_per_epoch`, `total_steps`, known from the
config and the data) and has no other state, so a resumed run recomputes the exact same weights.
`term(kl_dims, step, beta)` is the KL part of the objective, averaged over the batch;
`weight(step, beta)` is the multiplier of the KL it applies (logged as `beta`); `metrics` adds
what else a schedule wants logged. Steps count from 1. A new schedule is a class with these
methods and a file in conf/kl/.
"""

from __future__ import annotations

import math

import torch

from vaelab.errors import ConfigError


class KLSchedule:
    """Constant beta, as the plain ELBO and the beta-VAE (Higgins et al. 2017) use it."""

    weight_only = True  # the term is weight(step) * KL, so it also applies inside an IW bound

    def __init__(self, steps_per_epoch: int = 1, total_steps: int = 1, name: str = "constant"):  # noqa: ARG002
        if steps_per_epoch < 1 or total_steps < 1:
            raise ConfigError(f"a KL schedule needs steps >= 1, got {steps_per_epoch} per epoch, {total_steps} total")
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps

    def weight(self, step: int, beta: float) -> float:
        return beta

    def term(self, kl_dims: torch.Tensor, step: int, beta: float) -> torch.Tensor:
        """kl_dims: (B, latent_dim) KL of each dimension; returns () the batch mean of the KL term."""
        return self.weight(step, beta) * kl_dims.sum(dim=-1).mean()

    def metrics(self, step: int, beta: float) -> dict[str, float]:
        return {"beta": self.weight(step, beta)}


Constant = KLSchedule


class Warmup(KLSchedule):
    """Linear warm-up (Bowman et al. 2016; Sønderby et al. 2016): beta * min(1, step / warm-up
    steps), the warm-up lasting `epochs` epochs of steps."""

    def __init__(self, epochs: float = 10, **kw: object):
        super().__init__(**kw)
        if epochs < 0:
            raise ConfigError(f"kl.epochs must be >= 0, got {epochs}")
        self.warmup_steps = epochs * self.steps_per_epoch

    def weight(self, step: int, beta: float) -> float:
        return beta if self.warmup_steps <= 0 else beta * min(1.0, step / self.warmup_steps)


class Cyclical(KLSchedule):
    """Cyclical annealing (Fu et al. 2019, eq. 6): the run is cut into `cycles` equal cycles; in
    each, beta rises linearly from 0 over the first `ratio` of the cycle and then stays at beta."""

    def __init__(self, cycles: int = 4, ratio: float = 0.5, **kw: object):
        super().__init__(**kw)
        if cycles < 1 or not 0 < ratio <= 1:
            raise ConfigError(f"kl.cycles must be >= 1 and kl.ratio in (0, 1], got {cycles}, {ratio}")
        self.cycles, self.ratio = cycles, ratio

    def weight(self, step: int, beta: float) -> float:
        period = self.total_steps / self.cycles
        tau = math.fmod(step - 1, period) / period  # position in the cycle, [0, 1)
        return beta * min(1.0, tau / self.ratio)


class Capacity(KLSchedule):
    """Controlled capacity (Burgess et al. 2018, eq. 8): gamma * |KL - C(t)|, the capacity C rising
    linearly from 0 to `c_max` nats over the first `fraction` of training. beta is not used."""

    weight_only = False

    def __init__(self, gamma: float = 100.0, c_max: float = 25.0, fraction: float = 0.5, **kw: object):
        super().__init__(**kw)
        if gamma < 0 or c_max < 0 or not 0 < fraction <= 1:
            raise ConfigError(f"kl.gamma and kl.c_max must be >= 0 and kl.fraction in (0, 1],"
                              f" got {gamma}, {c_max}, {fraction}")
        self.gamma, self.c_max, self.ramp_steps = gamma, c_max, fraction * self.total_steps

    def capacity(self, step: int) -> float:
        return self.c_max * min(1.0, step / self.ramp_steps)

    def weight(self, step: int, beta: float) -> float:
        return self.gamma

    def term(self, kl_dims: torch.Tensor, step: int, beta: float) -> torch.Tensor:
        return self.gamma * (kl_dims.sum(dim=-1).mean() - self.capacity(step)).abs()

    def metrics(self, step: int, beta: float) -> dict[str, float]:
        return {"beta": self.gamma, "kl_capacity": self.capacity(step)}


class FreeBits(KLSchedule):
    """Free bits (Kingma et al. 2016, eq. 15): beta * sum_j max(floor, KL_j), KL_j the batch mean
    of dimension j, so no dimension is pushed below `floor` nats (no gradient under it)."""

    weight_only = False

    def __init__(self, floor: float = 0.5, **kw: object):
        super().__init__(**kw)
        if floor < 0:
            raise ConfigError(f"kl.floor must be >= 0, got {floor}")
        self.floor = floor

    def term(self, kl_dims: torch.Tensor, step: int, beta: float) -> torch.Tensor:
        return beta * kl_dims.mean(dim=0).clamp(min=self.floor).sum()
