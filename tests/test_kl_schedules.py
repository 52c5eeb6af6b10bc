"""KL schedules against their formulas, as pure functions of the global step."""

import pytest
import torch

from vaelab.errors import ConfigError
from vaelab.kl_schedules import Capacity, Constant, Cyclical, FreeBits, Warmup

KW = {"steps_per_epoch": 10, "total_steps": 100}


def test_constant_is_beta_times_kl():
    kl = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # (B, L)
    s = Constant(**KW)
    assert s.weight(57, 4.0) == 4.0 and s.term(kl, 1, 4.0).item() == pytest.approx(4.0 * 5.0)
    assert s.metrics(3, 4.0) == {"beta": 4.0}


@pytest.mark.parametrize(("step", "expected"), [(1, 0.04), (25, 1.0), (50, 2.0), (100, 2.0)])
def test_warmup_is_linear_in_steps(step, expected):
    # 5 epochs of 10 steps: beta * step / 50
    assert Warmup(epochs=5, **KW).weight(step, 2.0) == pytest.approx(expected)


def test_warmup_over_epochs_logs_what_the_epoch_warmup_did():
    """At each epoch's last step, beta * epoch / warmup_epochs: the old per-epoch values."""
    s = Warmup(epochs=10, **KW)
    assert [s.weight(10 * e, 4.0) for e in (1, 5, 10, 30)] == pytest.approx([0.4, 2.0, 4.0, 4.0])


def test_cyclical_follows_fu_et_al():
    s = Cyclical(cycles=4, ratio=0.5, **KW)  # cycles of 25 steps, rising over the first 12.5
    tau = lambda t: ((t - 1) % 25) / 25  # noqa: E731
    for t in range(1, 101):
        assert s.weight(t, 2.0) == pytest.approx(2.0 * min(1.0, tau(t) / 0.5))
    assert s.weight(1, 2.0) == 0.0 and s.weight(26, 2.0) == 0.0 and s.weight(25, 2.0) == 2.0


def test_capacity_is_gamma_times_distance_to_a_rising_capacity():
    s = Capacity(gamma=10.0, c_max=20.0, fraction=0.5, **KW)  # C reaches 20 nats at step 50
    assert [s.capacity(t) for t in (0, 25, 50, 90)] == [0.0, 10.0, 20.0, 20.0]
    kl = torch.tensor([[3.0, 4.0], [5.0, 6.0]])  # mean total KL 9
    assert s.term(kl, 25, beta=123.0).item() == pytest.approx(10.0 * abs(9.0 - 10.0))
    assert s.metrics(25, 1.0) == {"beta": 10.0, "kl_capacity": 10.0}


def test_free_bits_floors_each_dimensions_batch_mean():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 4.0, 0.2]])  # batch means 0.2, 3.0, 0.1
    s = FreeBits(floor=0.5, **KW)
    assert s.term(kl, 1, beta=2.0).item() == pytest.approx(2.0 * (0.5 + 3.0 + 0.5))
    grad = kl.clone().requires_grad_()
    s.term(grad, 1, 1.0).backward()
    assert grad.grad[:, 0].tolist() == [0.0, 0.0] and grad.grad[:, 1].tolist() == [0.5, 0.5]


def test_schedules_are_pure_functions_of_the_step():
    """A resumed run rebuilds the schedule and gets the same weights, in any order of steps."""
    for cls in (Constant, Warmup, Cyclical, Capacity, FreeBits):
        a, b = cls(**KW), cls(**KW)
        forward = [a.weight(t, 1.5) for t in range(1, 101)]
        backward = [b.weight(t, 1.5) for t in reversed(range(1, 101))][::-1]
        assert forward == backward, cls.__name__


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (Cyclical, {"cycles": 0}, "kl.cycles must be >= 1"),
    (Cyclical, {"ratio": 0}, "kl.ratio in"),
    (Capacity, {"fraction": 2}, "kl.fraction in"),
    (FreeBits, {"floor": -1}, "kl.floor must be >= 0"),
    (Warmup, {"epochs": -1}, "kl.epochs must be >= 0"),
])
def test_out_of_range_keys_are_config_errors(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(**kwargs, **KW)
