import pytest
import torch

from vaelab.models import MLPVAE, VAEOutput
from vaelab.summary import model_summary


def test_seed_model_has_the_keras_parameter_count():
    model = MLPVAE(input_dim=784, hidden_dim=256, latent_dim=2)
    sizes = [sum(p.numel() for p in m.parameters()) for m in (
        model.encoder.body[0], model.encoder.z_mean, model.encoder.z_log_var,
        model.decoder.body[0], model.decoder.logits)]
    assert sizes == [200_960, 514, 514, 768, 201_488]
    assert sum(p.numel() for p in model.parameters()) == 404_244


def test_summary_lists_layers_and_ends_with_the_total():
    text = model_summary(MLPVAE(), 784)
    assert "encoder.z_mean (Linear)" in text and "(None, 784)" in text
    assert text.splitlines()[-1] == "Total params: 404,244"


@pytest.mark.parametrize(("kwargs", "count"), [
    ({"hidden_dim": 400, "latent_dim": 20}, 652_824),  # pytorch/examples
    ({"hidden_dim": 200, "depth": 2, "latent_dim": 50, "activation": "torch.nn.Tanh"}, 425_284),
])
def test_other_sizes(kwargs, count):
    assert sum(p.numel() for p in MLPVAE(**kwargs).parameters()) == count


def test_forward_returns_tensors_of_the_right_shapes():
    out = MLPVAE(hidden_dim=32, latent_dim=5)(torch.rand(7, 784))
    assert isinstance(out, VAEOutput)
    assert out.logits.shape == (7, 784)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (7, 5)


def test_depth_and_activation_come_from_config():
    model = MLPVAE(hidden_dim=16, depth=3, activation="torch.nn.Tanh")
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.encoder.modules()) == 3
    assert sum(isinstance(m, torch.nn.Linear) for m in model.decoder.modules()) == 4


def test_a_step_changes_every_weight():
    torch.manual_seed(0)
    model = MLPVAE(hidden_dim=16, latent_dim=2)
    before = [p.detach().clone() for p in model.parameters()]
    out = model(torch.rand(4, 784))
    (out.logits.sum() + out.mu.sum() + out.logvar.sum()).backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_keras_init_gives_glorot_kernels_and_zero_biases():
    torch.manual_seed(0)
    model = MLPVAE(init="vaelab.models.keras_init")
    first = model.encoder.body[0]
    limit = (6 / (784 + 256)) ** 0.5
    assert torch.count_nonzero(first.bias) == 0
    assert first.weight.abs().max() <= limit and first.weight.abs().max() > 0.9 * limit
