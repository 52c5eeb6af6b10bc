import math

import pytest
import torch
import torch.nn.functional as F

from vaelab.losses import bernoulli_nll, elbo_terms, gaussian_kl, log_normal_diag, log_normal_std


def test_kl_is_zero_at_the_prior():
    mu, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    assert torch.allclose(gaussian_kl(mu, logvar), torch.zeros(4))


def test_kl_is_positive_away_from_the_prior():
    assert (gaussian_kl(torch.ones(2, 3), torch.full((2, 3), -1.0)) > 0).all()


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.tensor([[0.7, -1.2]]), torch.tensor([[-0.5, 0.3]])
    z = mu + torch.exp(0.5 * logvar) * torch.randn(200_000, 2)
    mc = (log_normal_diag(z, mu, logvar) - log_normal_std(z)).mean()
    assert gaussian_kl(mu, logvar).item() == pytest.approx(mc.item(), abs=0.01)


def test_bce_from_logits_matches_the_naive_formula():
    torch.manual_seed(0)
    logits, x = torch.randn(5, 784), torch.rand(5, 784)
    p = torch.sigmoid(logits)
    naive = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, x), naive, atol=1e-3)


def test_bce_from_logits_is_finite_where_the_naive_formula_is_not():
    logits, x = torch.tensor([[200.0, -200.0]]), torch.tensor([[0.0, 1.0]])
    nll = bernoulli_nll(logits, x)
    assert torch.isfinite(nll).all() and nll.item() == pytest.approx(400.0)


EXTREME_LOGITS = torch.tensor([[100.0, 100.0, -100.0, -100.0, 0.0, 0.0, 30.0, -30.0]])
EXTREME_PIXELS = torch.tensor([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5]])


def test_bernoulli_nll_matches_torch_bce_for_grey_levels():
    torch.manual_seed(0)
    logits, x = torch.randn(6, 784) * 5, torch.rand(6, 784)
    expected = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, x), expected, rtol=1e-6)


def test_bernoulli_nll_matches_torch_distributions_for_binary_pixels():
    torch.manual_seed(0)
    logits, x = torch.randn(6, 784) * 5, torch.bernoulli(torch.full((6, 784), 0.3))
    expected = -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(dim=1)
    assert torch.allclose(bernoulli_nll(logits, x), expected, rtol=1e-6)


def test_bernoulli_nll_at_extreme_logits_and_pixels_exactly_0_and_1():
    logits = EXTREME_LOGITS.clone().requires_grad_()
    per_pixel = [bernoulli_nll(logits[:, i : i + 1], EXTREME_PIXELS[:, i : i + 1]).item() for i in range(8)]
    # right answers: ~0 (3.7e-44), 100, 100, ~0, log 2, log 2, 30 * 0.5 + log1p(e^-30), the same
    expected = [0.0, 100.0, 100.0, 0.0, math.log(2), math.log(2), 15.0, 15.0]
    assert per_pixel == pytest.approx(expected, abs=1e-6)
    reference = -torch.distributions.Bernoulli(logits=EXTREME_LOGITS[:, :6]).log_prob(EXTREME_PIXELS[:, :6])
    assert per_pixel[:6] == pytest.approx(reference.flatten().tolist(), abs=1e-6)
    bernoulli_nll(logits, EXTREME_PIXELS).sum().backward()
    assert torch.allclose(logits.grad, torch.sigmoid(EXTREME_LOGITS) - EXTREME_PIXELS, atol=1e-7)  # d/dl = sigmoid(l) - x


def test_elbo_terms_average_over_the_batch_and_weight_kl_by_beta():
    torch.manual_seed(0)
    logits, x = torch.randn(8, 784), torch.rand(8, 784)
    mu, logvar = torch.randn(8, 2), torch.randn(8, 2)
    terms = elbo_terms(logits, x, mu, logvar, beta=4.0)
    assert terms.recon.item() == pytest.approx(bernoulli_nll(logits, x).mean().item())
    assert terms.kl.item() == pytest.approx(gaussian_kl(mu, logvar).mean().item())
    assert terms.loss.item() == pytest.approx(terms.recon.item() + 4.0 * terms.kl.item(), rel=1e-6)


def test_log_normal_std_matches_torch_distributions():
    z = torch.randn(3, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(log_normal_std(z), expected, atol=1e-5)
    assert math.isfinite(log_normal_diag(z, z * 0, z * 0).sum().item())
