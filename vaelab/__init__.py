"""vaelab: config-driven Variational Autoencoder experiments."""

__version__ = "0.1.0"
