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


def test_running_loss_on_the_cpu_shows_the_sum_as_it_was_at_the_refresh():
    """The loop adds to its running sum in place; the bar must show the sum of the refresh it
    divides by, not today's sum over an old image count (seen: loss=366.81 for a true 180)."""
    bar, shown = FakeBar(), RunningLoss()
    sums = torch.zeros(3)
    sums += torch.tensor([100.0, 0.0, 0.0])
    shown.refresh(bar, sums[0], seen=10)
    sums += torch.tensor([300.0, 0.0, 0.0])
    shown.refresh(bar, sums[0], seen=20)
    assert bar.shown == ["10.00"]


def test_an_epoch_shorter_than_the_refresh_interval_still_shows_its_loss(mnist_root):
    from vaelab.data import load_mnist, raw_dir
    from vaelab.models import MLPVAE
    from vaelab.objectives import ELBO
    from vaelab.train import train_epoch

    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"), limit=64)
    model = MLPVAE(hidden_dim=8, latent_dim=2)
    optimizer = torch.optim.Adam(model.parameters())
    bar = FakeBar()
    bar.update = lambda n: None
    train = train_epoch(model, optimizer, data, batch_size=32, objective=ELBO(),
                        generator=torch.Generator().manual_seed(0), bar=bar, progress_every=50)
    assert bar.shown == [f"{train['loss']:.2f}"]
