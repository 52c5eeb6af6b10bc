"""Training throughput of vaelab against the machine's matmul speed and a DataLoader baseline.

    python benchmarks/bench_train.py [--epochs 5] [--device auto] [--baseline-epochs 2]

For each model at batch 128 it prints: train seconds per epoch (median), images/s, achieved
GFLOP/s (counted from the Linear layer shapes, forward + backward), the matmul GFLOP/s this
process reaches on the very same GEMM shapes, their ratio, the test-set evaluation time, and the
same model trained by a plain torchvision DataLoader + ToTensor loop with its speed-up.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from vaelab.app import resolve_device
from vaelab.data import default_root, ensure_mnist, load_mnist
from vaelab.evaluate import evaluate_elbo
from vaelab.losses import elbo_terms
from vaelab.models import MLPVAE
from vaelab.train import train_epoch

MODELS = {"default 784-256-2": (256, 2), "pytorch_example 784-400-20": (400, 20)}
BATCH = 128


def gemm_shapes(model: torch.nn.Module, batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul of a training step: forward, grad-input (not for the data
    layer, whose input needs no gradient) and grad-weight of each Linear."""
    shapes = []
    for i, layer in enumerate(m for m in model.modules() if isinstance(m, torch.nn.Linear)):
        fan_in, fan_out = layer.in_features, layer.out_features
        shapes.append((batch, fan_in, fan_out))  # y = x W^T
        if i > 0:
            shapes.append((batch, fan_out, fan_in))  # dx = dy W
        shapes.append((fan_out, batch, fan_in))  # dW = dy^T x
    return shapes


def flops(shapes: list[tuple[int, int, int]]) -> int:
    return sum(2 * m * k * n for m, k, n in shapes)


def matmul_gflops(shapes: list[tuple[int, int, int]], device: torch.device, repeats: int = 200) -> float:
    """GFLOP/s of torch.mm on exactly these shapes, back to back, as a training step issues them."""
    operands = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes]
    for _ in range(20):
        for a, b in operands:
            torch.mm(a, b)
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        for a, b in operands:
            torch.mm(a, b)
    sync(device)
    return flops(shapes) * repeats / (time.perf_counter() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_vaelab(model, data, device, epochs: int) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(epochs + 1):  # the first epoch warms caches and allocators; not counted
        with tqdm(disable=True) as bar:
            sync(device)
            start = time.perf_counter()
            train_epoch(model, optimizer, data, BATCH, 1.0, gen, bar, progress_every=10**9)
            sync(device)
        times.append(time.perf_counter() - start)
    return times[1:]


def time_eval(model, data, device) -> float:
    evaluate_elbo(model, data.test.x, 10_000)
    sync(device)
    start = time.perf_counter()
    for _ in range(3):
        evaluate_elbo(model, data.test.x, 10_000)
    sync(device)
    return (time.perf_counter() - start) / 3


def time_dataloader(hidden: int, latent: int, root: Path, device, epochs: int) -> list[float]:
    """The common way, as in pytorch/examples' VAE: torchvision MNIST + ToTensor + DataLoader,
    a host sync (loss.item()) every step."""
    from torchvision import datasets, transforms

    model = MLPVAE(hidden_dim=hidden, latent_dim=latent).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        total = 0.0
        for xb, _ in loader:
            xb = xb.to(device).view(-1, 784)
            out = model(xb)
            loss = elbo_terms(out.logits, xb, out.mu, out.logvar).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="timed vaelab epochs per model (median)")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="timed DataLoader epochs (0: skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--root", default=None, help="data.root (default: ~/.cache/vaelab)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    root = Path(args.root) if args.root else default_root()
    raw = ensure_mnist(root)
    data = load_mnist(raw, device)
    cpu = platform.processor() or _cpu_name()
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}{gpu}, device {device}")
    print(f"MNIST train {len(data.train):,} images, batch {BATCH}; median of {args.epochs} epochs after one warm-up\n")
    header = (f"{'model':<28}{'s/epoch':>9}{'img/s':>10}{'GFLOP/s':>9}{'matmul':>9}{'ratio':>7}"
              f"{'eval s':>8}{'eval %':>8}{'DataLoader s':>14}{'speed-up':>10}")
    print(header)
    print("-" * len(header))
    for name, (hidden, latent) in MODELS.items():
        torch.manual_seed(0)
        model = MLPVAE(hidden_dim=hidden, latent_dim=latent).to(device)
        shapes = gemm_shapes(model, BATCH)
        epoch = statistics.median(time_vaelab(model, data, device, args.epochs))
        steps = -(-len(data.train) // BATCH)
        achieved = flops(shapes) * steps / epoch / 1e9
        ceiling = matmul_gflops(shapes, device)
        eval_s = time_eval(model, data, device)
        base = statistics.median(time_dataloader(hidden, latent, root, device, args.baseline_epochs)) if args.baseline_epochs else float("nan")
        print(f"{name:<28}{epoch:>9.3f}{len(data.train) / epoch:>10,.0f}{achieved:>9.1f}{ceiling:>9.1f}"
              f"{achieved / ceiling:>7.0%}{eval_s:>8.3f}{eval_s / epoch:>8.1%}{base:>14.2f}{base / epoch:>9.1f}x")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


if __name__ == "__main__":
    main()
