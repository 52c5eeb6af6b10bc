"""The seed itself: the classic Keras MLP VAE (784-256-2, RMSprop, batch 100), in Keras 3.

    KERAS_BACKEND=torch PYTHONPATH=.peers .venv/bin/python benchmarks/peers/keras_seed.py --epochs 3

The yardstick of `vaelab experiment=keras_seed` (benchmarks/bench_peers.py, docs/performance.md):
the model, loss, optimizer and batch size of the seed, trained the seed's way, with Keras' `fit`
on NumPy arrays and the test set evaluated after every epoch. Keras runs on the same torch as
vaelab (the torch backend), so the two differ only in the framework around the maths.

- encoder 784-256(relu) -> z_mean, z_log_var (2 each); z = z_mean + exp(z_log_var / 2) * eps
- decoder 2-256(relu)-784(sigmoid); 404,244 parameters
- loss: 784 * binary cross-entropy (the pixel sum) + the Gaussian KL, averaged over the batch
- RMSprop with Keras' defaults (lr 1e-3, rho 0.9, epsilon 1e-7), batch 100, shuffled

MNIST is read from the four IDX files (`--data`, default ~/.cache/vaelab/MNIST/raw, where
`vaelab` puts them), since Keras' own download needs the internet.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers, ops  # noqa: E402

DIM, HIDDEN, LATENT = 784, 256, 2


def read_images(path: Path) -> np.ndarray:
    """IDX3 images (plain or .gz) as float32 in [0, 1], flat: (N, 784)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    count = int.from_bytes(raw[4:8], "big")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(count, DIM).astype("float32") / 255


def find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise SystemExit(f"keras_seed: {name} is not in {folder}; run vaelab once to fetch MNIST, or pass --data")


class Sampling(layers.Layer):
    """The reparameterised sample; adds the KL term of the seed's loss."""

    def __init__(self, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.seed = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        kl = -0.5 * ops.sum(1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)
        self.add_loss(ops.mean(kl))
        eps = keras.random.normal(ops.shape(z_mean), seed=self.seed)
        return z_mean + ops.exp(0.5 * z_log_var) * eps


def seed_vae(seed: int) -> keras.Model:
    x = keras.Input((DIM,))
    h = layers.Dense(HIDDEN, activation="relu")(x)
    z_mean, z_log_var = layers.Dense(LATENT)(h), layers.Dense(LATENT)(h)
    z = Sampling(seed)([z_mean, z_log_var])
    x_mean = layers.Dense(DIM, activation="sigmoid")(layers.Dense(HIDDEN, activation="relu")(z))
    return keras.Model(x, x_mean, name="vae")


def reconstruction(x, x_mean):
    return DIM * keras.losses.binary_crossentropy(x, x_mean)  # Keras averages over pixels: x 784 = the sum


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch + 1}: loss {logs['loss']:.2f} val_loss {logs['val_loss']:.2f}"
              f" {time.perf_counter() - self.start:.2f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "vaelab" / "MNIST" / "raw")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_train = read_images(find(args.data, "train-images-idx3-ubyte"))
    x_test = read_images(find(args.data, "t10k-images-idx3-ubyte"))
    vae = seed_vae(args.seed)
    vae.compile(optimizer=keras.optimizers.RMSprop(), loss=reconstruction)
    print(f"keras {keras.__version__} ({keras.backend.backend()} backend), {vae.count_params():,} parameters")
    history = vae.fit(x_train, x_train, epochs=args.epochs, batch_size=args.batch_size, shuffle=True,
                      validation_data=(x_test, x_test), verbose=0, callbacks=[EpochTimes()])
    print(f"final test loss (-ELBO): {history.history['val_loss'][-1]:.2f} nats/image")


if __name__ == "__main__":
    main()
