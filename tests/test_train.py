import math

import pytest
import torch

from vaelab.errors import DivergenceError
from vaelab.train import RunningLoss, check_finite


class FakeBar:
    def __init__(self):
        self.shown = []

    def set_postfix(self, **kwargs):
        self.shown.append(kwargs["loss"])


def test_running_loss_shows_the_previous_refresh_without_waiting():
    bar, shown = FakeBar(), RunningLoss()
    shown.refresh(bar, torch.tensor(100.0), seen=10)
    assert bar.shown == []  # nothing has landed yet
    shown.refresh(bar, torch.tensor(300.0), seen=20)
    assert bar.shown == ["10.00"]


def test_nan_guard_names_the_epoch_and_the_metric():
    with pytest.raises(DivergenceError, match=r"epoch 3: \{'train/loss': nan\}"):
        check_finite({"train/loss": math.nan, "test/loss": 1.0}, epoch=3)
    check_finite({"train/loss": 1.0}, epoch=1)
