"""Pure plotting functions: tensors or arrays in, image arrays or matplotlib figures out. No I/O.

Figures are drawn on the tracker's background thread from NumPy arrays: matplotlib is imported
by the functions that draw, and torch only by `manifold_latents`, which makes a model's input.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

SIDE = 28  # MNIST's images are 28 x 28: the default shape
SCATTER_PASSES = 4  # the latent scatter's passes over the classes: the class drawn last covers a quarter of the others
# PER_EPOCH_LAYOUT: the two figures drawn every epoch (latent scatter, manifold) have fixed margins,
# those tight_layout chose for them; tight_layout lays every text out once more: 0.8x their CPU
# without it (~310 -> ~250 ms each), taken from training's cores (docs/performance.md).


def as_array(values: Any) -> np.ndarray:
    """A tensor (on any device) or array-like as a float32 NumPy array."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


def image_grid(images: torch.Tensor | np.ndarray, ncol: int, pad: int = 2, scale: int = 2,
               shape: tuple[int, ...] = (1, SIDE, SIDE)) -> np.ndarray:
    """Tile flat images (N, C*H*W) in [0, 1] into one uint8 picture, `ncol` per row (more than
    one channel: their grey mean)."""
    h, w = shape[-2:]
    imgs = np.clip(as_array(images), 0, 1).reshape(len(images), -1, h, w).mean(1)  # (N, H, W)
    nrow = -(-len(imgs) // ncol)
    canvas = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i, img in enumerate(imgs):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    canvas = np.kron(canvas, np.ones((scale, scale), dtype=np.float32))  # nearest upscaling
    return (canvas * 255).round().astype(np.uint8)


def reconstruction_grid(originals: torch.Tensor | np.ndarray, recons: torch.Tensor | np.ndarray, ncol: int = 10,
                        shape: tuple[int, ...] = (1, SIDE, SIDE)) -> np.ndarray:
    """Rows of originals, each directly above the row of their reconstructions."""
    originals, recons = as_array(originals), as_array(recons)
    rows = []
    for start in range(0, len(originals), ncol):
        rows += [originals[start : start + ncol], recons[start : start + ncol]]
    return image_grid(np.concatenate(rows), ncol, shape=shape)


def latent_scatter(z: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None, title: str | None = None,
                   seed: int = 0) -> Figure:
    """Test-set latent means coloured by label (one colour without labels); more than 2
    dimensions are projected by PCA.

    Points are drawn in shuffled order, in `SCATTER_PASSES` passes over the classes, so that no
    class hides under the next: one line of markers per class and pass, which Agg stamps from
    one cached marker. The figure takes 0.6x the CPU of a scatter, whose collection Agg draws
    point by point as paths.
    """
    z = as_array(z)
    legend = labels is not None
    labels = np.zeros(len(z), dtype=int) if labels is None else as_array(labels).astype(int)
    dims = z.shape[1]
    if dims > 2:
        points, var = pca_2d(z)
        what = f"PCA of the {dims}-D latent means ({var:.0%} of variance shown)"
        xlabel, ylabel = "PC 1", "PC 2"
    else:
        points = np.concatenate([z, np.zeros((len(z), 2 - dims), dtype=np.float32)], axis=1)
        what, xlabel, ylabel = "Latent means of the test set", "z[0]", "z[1]" if dims == 2 else ""
    import matplotlib
    from matplotlib.lines import Line2D

    order = np.random.default_rng(seed).permutation(len(points))
    cmap = matplotlib.colormaps["tab10"]
    fig = new_figure(7, 6)
    ax = fig.add_subplot()
    points, labels = points[order], labels[order]
    for part in np.array_split(np.arange(len(points)), SCATTER_PASSES):
        for label in np.unique(labels[part]):  # no marker edges (mew=0): the same dots, drawn faster
            mine = part[labels[part] == label]
            ax.plot(points[mine, 0], points[mine, 1], ls="", marker="o", ms=2, mew=0, color=cmap(int(label) % 10))
    if legend:
        handles = [Line2D([], [], ls="", marker="o", ms=5, color=cmap(int(d) % 10), label=str(d))
                   for d in np.unique(labels)]
        ax.legend(handles=handles, title="label", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set(title=f"{title}\n{what}" if title else what, xlabel=xlabel, ylabel=ylabel)
    fig.subplots_adjust(left=0.12, right=0.88 if legend else 0.975, bottom=0.1, top=0.9)  # see PER_EPOCH_LAYOUT
    return fig


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of this size in inches, at 100 dpi, drawn off-screen (no pyplot state)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def figure_to_array(figure: Figure) -> np.ndarray:
    """Render a figure to a uint8 array, e.g. for a keyed image with a step: RGB (H, W, 3), or
    grey (H, W) when every pixel is grey (the manifold), whose PNG takes a quarter of the time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].copy()
    return rgb.copy()


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Project (N, L) onto its top two principal components; return points and explained share."""
    centred = z - z.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = float((s[:2] ** 2).sum() / (s**2).sum())
    return centred @ vt[:2].T, share


def gaussian_quantiles(n: int = 15, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """The standard normal's quantiles at n evenly spaced levels from `low` to `high`."""
    return np.array([NormalDist().inv_cdf(p) for p in np.linspace(low, high, n)], dtype=np.float32)


MANIFOLD_SIDE = 15  # the decoded manifold's n x n latents


def manifold_latents(n: int = MANIFOLD_SIDE, low: float = 0.05, high: float = 0.95) -> torch.Tensor:
    """An n x n grid of 2-D latents at Gaussian quantiles, as in the Keras VAE example, (n*n, 2).

    Rows run from high z[1] at the top to low at the bottom, so the picture reads like the plane.
    """
    import torch

    q = gaussian_quantiles(n, low, high)
    zy, zx = np.meshgrid(q[::-1], q, indexing="ij")
    return torch.from_numpy(np.stack([zx.reshape(-1), zy.reshape(-1)], axis=1))


def manifold_mosaic(images: torch.Tensor | np.ndarray, n: int = MANIFOLD_SIDE,
                    shape: tuple[int, ...] = (1, SIDE, SIDE)) -> np.ndarray:
    """The decodings of `manifold_latents(n)` as one n x n mosaic, each decoded pixel once."""
    return image_grid(images, ncol=n, pad=0, scale=1, shape=shape)


def manifold_figure(images: torch.Tensor | np.ndarray, n: int = MANIFOLD_SIDE, shape: tuple[int, ...] = (1, SIDE, SIDE),
                    title: str | None = None) -> Figure:
    """The decoded manifold: `manifold_mosaic`, with the latents' quantiles on its axes."""
    mosaic = manifold_mosaic(images, n, shape)
    fig = new_figure(8, 8)
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap="Greys_r", extent=(0, n, 0, n), interpolation="nearest")  # each pixel as decoded
    ticks = gaussian_quantiles(n).round(1) + 0.0  # + 0.0: the middle tick reads 0.0, not -0.0
    ax.set_xticks(np.arange(n) + 0.5, [f"{t:.1f}" for t in ticks], fontsize=7)
    ax.set_yticks(np.arange(n) + 0.5, [f"{t:.1f}" for t in ticks], fontsize=7)
    ax.set(title=f"{title}\nDecoded latent manifold" if title else "Decoded latent manifold",
           xlabel="z[0]", ylabel="z[1]")
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.07, top=0.925)  # see PER_EPOCH_LAYOUT
    return fig


def rate_distortion(kl: list[float], recon: list[float], labels: list[str], title: str | None = None) -> Figure:
    """KL (rate) against reconstruction (distortion), one labelled point per run (runs are
    configurations, not a sequence: no line joins them)."""
    fig = new_figure(6, 5)
    ax = fig.add_subplot()
    ax.scatter(kl, recon, s=30, zorder=2)
    for x, y, label in zip(kl, recon, labels):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set(xlabel="rate: KL (nats/image)", ylabel="distortion: reconstruction (nats/image)",
           title=f"{title}\nRate-distortion on the test set" if title else "Rate-distortion on the test set")
    ax.margins(0.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def objective_per_config(losses: list[float], labels: list[str], title: str | None = None) -> Figure:
    """Final test loss of each configuration as horizontal bars, best at the top, value printed."""
    order = sorted(range(len(losses)), key=lambda i: losses[i], reverse=True)
    fig = new_figure(7, 1.2 + 0.4 * len(losses))
    ax = fig.add_subplot()
    values = [losses[i] for i in order]
    bars = ax.barh([labels[i] for i in order], values, color="tab:blue")
    ax.bar_label(bars, [f"{v:.2f}" for v in values], padding=3, fontsize=8)
    low, high = min(values), max(values)
    span = (high - low) or abs(high) * 0.05 or 1.0
    ax.set_xlim(low - span, high + span)  # the differences, not the common offset, fill the width
    ax.set(xlabel="test loss, -ELBO (nats/image; lower is better)",
           title=f"{title}\nTest loss per configuration" if title else "Test loss per configuration")
    fig.tight_layout()
    return fig


def kl_per_dimension(kl: list[float], title: str | None = None) -> Figure:
    """Mean test KL of each latent dimension, so collapsed units show as bars near zero."""
    fig = new_figure(max(4, 0.3 * len(kl) + 2), 3.5)
    ax = fig.add_subplot()
    ax.bar(range(len(kl)), kl, color="tab:blue")
    ax.set(xlabel="latent dimension", ylabel="KL (nats/image)",
           title=f"{title}\nKL per latent dimension" if title else "KL per latent dimension")
    ax.set_xticks(range(len(kl)))
    fig.tight_layout()
    return fig
