"""VAE models: encoders, decoders and the VAE that composes them. No loss, no I/O, no printing."""

from vaelab.models.conv import ConvDecoder, ConvEncoder, ConvVAE
from vaelab.models.mlp import BernoulliDecoder, GaussianEncoder, MLPDecoder, MLPVAE, mlp
from vaelab.models.vae import VAE, VAEOutput, autocast_forward, keras_init, reparameterize

__all__ = [
    "VAE", "BernoulliDecoder", "ConvDecoder", "ConvEncoder", "ConvVAE", "GaussianEncoder", "MLPDecoder", "MLPVAE",
    "VAEOutput", "autocast_forward", "keras_init", "mlp", "reparameterize",
]
