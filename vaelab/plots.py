"""Pure plotting functions: tensors in, image arrays or matplotlib figures out. No I/O."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

SIDE = 28  # MNIST's images are 28 x 28: the default shape


def image_grid(images: torch.Tensor, ncol: int, pad: int = 2, scale: int = 2,
               shape: tuple[int, ...] = (1, SIDE, SIDE)) -> np.ndarray:
    """Tile flat images (N, C*H*W) in [0, 1] into one uint8 picture, `ncol` per row (more than
    one channel: their grey mean)."""
    h, w = shape[-2:]
    imgs = images.detach().float().cpu().clamp(0, 1).reshape(len(images), -1, h, w).mean(1).numpy()  # (N, H, W)
    nrow = -(-len(imgs) // ncol)
    canvas = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    canvas = np.kron(canvas, np.ones((scale, scale), dtype=np.float32))  # nearest upscaling
    return (canvas * 255).round().astype(np.uint8)


def reconstruction_grid(originals: torch.Tensor, recons: torch.Tensor, ncol: int = 10,
                        shape: tuple[int, ...] = (1, SIDE, SIDE)) -> np.ndarray:
    """Rows of originals, each directly above the row of their reconstructions."""
    rows = []
    for start in range(0, len(originals), ncol):
        rows += [originals[start : start + ncol], recons[start : start + ncol]]
    return image_grid(torch.cat(rows), ncol, shape=shape)


def latent_scatter(z: torch.Tensor, labels: torch.Tensor | None, title: str | None = None) -> Figure:
    """Test-set latent means coloured by label (one colour without labels); more than 2
    dimensions are projected by PCA."""
    z = z.detach().float().cpu()
    legend = labels is not None
    labels = np.zeros(len(z), dtype=int) if labels is None else labels.cpu().numpy()
    dims = z.shape[1]
    if dims > 2:
        points, var = pca_2d(z)
        default = f"PCA of the {dims}-D latent means ({var:.0%} of variance shown)"
        xlabel, ylabel = "PC 1", "PC 2"
    else:
        points = torch.cat([z, torch.zeros(len(z), 2 - dims)], dim=1).numpy()
        default, xlabel, ylabel = "Latent means of the test set", "z[0]", "z[1]" if dims == 2 else ""
    fig = Figure(figsize=(7, 6), dpi=100)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["tab10"]
    for digit in np.unique(labels):
        sel = labels == digit
        ax.scatter(points[sel, 0], points[sel, 1], s=2, color=cmap(int(digit) % 10), label=str(digit))
    if legend:
        ax.legend(title="label", markerscale=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set(title=title or default, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    return fig


def pca_2d(z: torch.Tensor) -> tuple[np.ndarray, float]:
    """Project (N, L) onto its top two principal components; return points and explained share."""
    centred = z - z.mean(dim=0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    share = float((s[:2] ** 2).sum() / (s**2).sum())
    return (centred @ v[:2].T).numpy(), share


def manifold_latents(n: int = 15, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """An n x n grid of 2-D latents at Gaussian quantiles, as in the Keras VAE example, (n*n, 2).

    Rows run from high z[1] at the top to low at the bottom, so the picture reads like the plane.
    """
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(low, high, n))
    zy, zx = torch.meshgrid(q.flip(0), q, indexing="ij")
    return torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=1)


def manifold_figure(images: torch.Tensor, n: int = 15, shape: tuple[int, ...] = (1, SIDE, SIDE)) -> Figure:
    """The decoded manifold: an n x n mosaic of decodings of `manifold_latents(n)`."""
    mosaic = image_grid(images, ncol=n, pad=0, scale=1, shape=shape)
    fig = Figure(figsize=(8, 8), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap="Greys_r", extent=(0, n, 0, n))
    ticks = manifold_latents(n)[:n, 0].numpy()
    ax.set_xticks(np.arange(n) + 0.5, [f"{t:.1f}" for t in ticks], fontsize=7)
    ax.set_yticks(np.arange(n) + 0.5, [f"{t:.1f}" for t in ticks], fontsize=7)
    ax.set(title="Decoded latent manifold", xlabel="z[0]", ylabel="z[1]")
    fig.tight_layout()
    return fig


def rate_distortion(kl: list[float], recon: list[float], labels: list[str]) -> Figure:
    """KL (rate) against reconstruction (distortion), one labelled point per run."""
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot(kl, recon, "o-")
    for x, y, label in zip(kl, recon, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="rate: KL (nats/image)", ylabel="distortion: reconstruction (nats/image)",
           title="Rate-distortion on the test set")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
