"""Learning-rate schedules that need more than a torch class and its arguments."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def burda_factor(epoch: int, decay_steps: int = 7) -> float:
    """Burda et al. (2015), sec. 5: stage i lasts 3**i epochs at lr * 10**(-i / 7); 0-based epoch."""
    stage, end = 0, 1
    while epoch >= end:
        stage += 1
        end += 3**stage
    return 10 ** (-stage / decay_steps)


def burda(optimizer: torch.optim.Optimizer, decay_steps: int = 7) -> LambdaLR:
    """Burda et al.'s piecewise-constant schedule, stepped once per epoch."""
    return LambdaLR(optimizer, lambda epoch: burda_factor(epoch, decay_steps))
