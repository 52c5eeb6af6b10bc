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


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_each_epochs_report_gets_the_test_means_of_its_own_test_elbo_pass(mnist_root, autocast):
    """The latent scatter's means come from the test ELBO's encoder pass, not a second one: under
    float32 exactly `encode_means`' (a second pass cost ~50 ms of CPU every epoch)."""
    from vaelab.data import load_mnist, raw_dir
    from vaelab.metrics import encode_means
    from vaelab.models import MLPVAE
    from vaelab.objectives import ELBO
    from vaelab.train import fit

    data = load_mnist(raw_dir(mnist_root), torch.device("cpu"), limit=64)
    model = MLPVAE(hidden_dim=8, latent_dim=2)
    reports = []
    fit(model, torch.optim.Adam(model.parameters()), data, epochs=2, batch_size=32, eval_batch_size=16,
        objective=ELBO(), seed=0, progress=False, autocast=autocast,
        on_epoch_end=lambda epoch, metrics, means: reports.append((epoch, means, encode_means(model, data.test.x, 16)[0])))
    assert [epoch for epoch, _, _ in reports] == [1, 2]
    for _, means, alone in reports:
        assert means.shape == (len(data.test), 2) and means.dtype == torch.float32
        if autocast is None:
            assert torch.equal(means, alone)
        else:
            assert torch.allclose(means, alone, atol=0.05)
