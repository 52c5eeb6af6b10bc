"""Each likelihood against torch.distributions on random inputs, and its mean."""

import math

import pytest
import torch
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import ContinuousBernoulli as TorchCB
from torch.distributions import Normal

from vaelab.errors import ConfigError
from vaelab.likelihoods import Bernoulli, ContinuousBernoulli, Gaussian


def test_bernoulli_matches_torch_on_binary_pixels():
    torch.manual_seed(0)
    logits, x = 3 * torch.randn(6, 50), torch.bernoulli(torch.rand(6, 50))
    expected = -TorchBernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(Bernoulli().nll(logits, x), expected, atol=1e-4)
    assert torch.allclose(Bernoulli().mean(logits), torch.sigmoid(logits))


def test_continuous_bernoulli_matches_torch_on_grey_pixels():
    torch.manual_seed(0)
    logits, x = 4 * torch.randn(6, 50), torch.rand(6, 50)
    cb = ContinuousBernoulli()
    expected = -TorchCB(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(cb.nll(logits, x), expected, rtol=1e-4, atol=1e-3)
    assert torch.allclose(cb.mean(logits), TorchCB(logits=logits).mean, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 1e-6, -1e-4, 5e-3, 0.02, -0.3])
def test_continuous_bernoulli_normaliser_is_exact_and_smooth_near_one_half(eta):
    """log C(eta) = log(eta / tanh(eta/2)) in float64, and the density integrates to 1."""
    cb = ContinuousBernoulli()
    e = torch.tensor(eta, dtype=torch.float64)
    exact = math.log(2.0) if eta == 0 else math.log(eta / math.tanh(eta / 2))
    assert cb.log_norm(e.float()).item() == pytest.approx(exact, abs=1e-6)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    density = torch.exp(-cb.nll(torch.full((1, 1), eta, dtype=torch.float64).expand(len(grid), 1), grid[:, None]))
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)


def test_continuous_bernoulli_gradient_is_finite_at_one_half():
    eta = torch.zeros(2, 3, requires_grad=True)
    ContinuousBernoulli().nll(eta, torch.rand(2, 3)).sum().backward()
    assert torch.isfinite(eta.grad).all()


@pytest.mark.parametrize("sigma", [0.1, 1.0])
def test_fixed_gaussian_matches_torch(sigma):
    torch.manual_seed(0)
    mean, x = torch.rand(4, 30), torch.rand(4, 30)
    expected = -Normal(mean, sigma).log_prob(x).sum(-1)
    assert torch.allclose(Gaussian(sigma=sigma).nll(mean, x), expected, atol=1e-4)
    assert torch.equal(Gaussian(sigma=sigma).mean(mean), mean)


def test_learned_gaussian_has_one_sigma_per_pixel_and_trains_it():
    torch.manual_seed(0)
    lik = Gaussian(dim=30, sigma=0.5, learn_sigma=True)
    assert [p.shape for p in lik.parameters()] == [torch.Size([30])]
    sigma = torch.linspace(0.1, 2.0, 30)
    with torch.no_grad():
        lik.log_sigma.copy_(sigma.log())
    mean, x = torch.rand(4, 30), torch.rand(4, 30)
    assert torch.allclose(lik.nll(mean, x), -Normal(mean, sigma).log_prob(x).sum(-1), atol=1e-4)
    lik.nll(mean, x).sum().backward()
    assert lik.log_sigma.grad is not None and lik.log_sigma.grad.abs().sum() > 0


def test_gaussian_sigma_must_be_positive():
    with pytest.raises(ConfigError, match="likelihood.sigma must be > 0, got 0"):
        Gaussian(sigma=0)


@pytest.mark.parametrize("lik", [Bernoulli(), ContinuousBernoulli(), Gaussian(dim=7, learn_sigma=True)])
def test_likelihoods_take_k_samples_at_once(lik):
    """The IW bound hands (k, B, D) parameters: the result is (k, B)."""
    params, x = torch.randn(3, 2, 7), torch.rand(2, 7)
    assert lik.nll(params, x.expand(3, -1, -1)).shape == (3, 2)
