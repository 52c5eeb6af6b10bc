import torch

from vaelab.linear_probe import probe_accuracy


def test_probe_separates_separable_classes_and_fails_on_noise():
    gen = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(5, 3, generator=gen)
    y = torch.arange(1000) % 5
    z = centres[y] + 0.3 * torch.randn(1000, 3, generator=gen)
    assert probe_accuracy(z[:800], y[:800], z[800:], y[800:]) > 0.98
    noise = torch.randn(1000, 3, generator=gen)
    assert probe_accuracy(noise[:800], y[:800], noise[800:], y[800:]) < 0.4


def test_probe_is_deterministic():
    gen = torch.Generator().manual_seed(1)
    z, y = torch.randn(300, 4, generator=gen), torch.randint(0, 3, (300,), generator=gen)
    assert probe_accuracy(z[:200], y[:200], z[200:], y[200:], seed=3) == probe_accuracy(z[:200], y[:200], z[200:], y[200:], seed=3)
