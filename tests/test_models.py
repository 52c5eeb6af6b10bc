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


def test_the_seed_model_initialises_exactly_as_before_the_split_into_models():
    """Same modules, same order, same draws: the parameter sum under seed 0 of the flat models.py."""
    torch.manual_seed(0)
    model = MLPVAE()
    assert [n for n, _ in model.named_parameters()][:3] == ["encoder.body.0.weight", "encoder.body.0.bias", "encoder.z_mean.weight"]
    assert float(sum(p.detach().double().sum() for p in model.parameters())) == pytest.approx(24.187887049910017, abs=1e-9)


def test_the_image_shape_comes_from_the_data_and_a_contradicting_input_dim_fails():
    from vaelab.errors import ConfigError

    assert MLPVAE(hidden_dim=8, image_shape=(1, 10, 12))(torch.rand(2, 120)).logits.shape == (2, 120)
    with pytest.raises(ConfigError, match="model.input_dim is 784 but the data's images are"):
        MLPVAE(input_dim=784, image_shape=(1, 10, 12))


def test_keras_conv_has_the_keras_parameter_counts():
    """keras-io's VAE example: encoder 69,076, decoder 65,089 parameters."""
    from vaelab.models import ConvVAE

    model = ConvVAE(channels=[32, 64], kernels=[3, 3], strides=[2, 2], dense_dim=16, latent_dim=2)
    assert sum(p.numel() for p in model.encoder.parameters()) == 69_076
    assert sum(p.numel() for p in model.decoder.parameters()) == 65_089
    out = model(torch.rand(5, 784))
    assert out.logits.shape == (5, 784) and out.mu.shape == (5, 2)
    assert model.encoder.feature_shape == (64, 7, 7)


@pytest.mark.parametrize(("shape", "channels", "kernels", "strides"), [
    ((1, 28, 28), [16], [5], [2]),
    ((3, 32, 30), [8, 16, 32], [5, 3, 3], [2, 2, 2]),
    ((1, 27, 27), [4, 8], [3, 4], [2, 3]),
])
def test_conv_decoder_mirrors_any_stack_back_to_the_image_shape(shape, channels, kernels, strides):
    from vaelab.models import ConvVAE

    model = ConvVAE(channels=channels, kernels=kernels, strides=strides, image_shape=shape, latent_dim=3)
    d = shape[0] * shape[1] * shape[2]
    assert model(torch.rand(2, d)).logits.shape == (2, d)
    transposed = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in transposed] == [*channels[::-1], shape[0]]


def test_conv_lists_of_different_lengths_are_a_config_error():
    from vaelab.errors import ConfigError
    from vaelab.models import ConvVAE

    with pytest.raises(ConfigError, match="same length"):
        ConvVAE(channels=[8, 16], kernels=[3], strides=[2, 2])


def test_a_learned_likelihood_parameter_is_part_of_the_model():
    from vaelab.likelihoods import Gaussian

    model = MLPVAE(hidden_dim=8, likelihood=Gaussian(dim=784, learn_sigma=True))
    assert "likelihood.log_sigma" in dict(model.named_parameters())
    assert sum(p.numel() for p in MLPVAE().parameters()) == 404_244  # Bernoulli adds none
