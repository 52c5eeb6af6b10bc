"""Training throughput of vaelab against the machine's matmul speed and a DataLoader baseline.

    python benchmarks/bench_train.py [--rounds 5] [--baseline-rounds 3] [--device auto] [--precision fp32|bf16]

For each model at batch 128 it prints: train seconds per epoch (median), images/s, achieved
GFLOP/s (counted from the Linear layer shapes, forward + backward), the matmul GFLOP/s this
process reaches on the very same GEMM shapes, their ratio, the test-set evaluation time, and the
same model trained by a plain torchvision DataLoader + ToTensor loop with its speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from vaelab.paths import config_dir
from vaelab.app import build_optimizer, resolve_device
from vaelab.data import default_root, ensure_mnist, load_mnist
from vaelab.metrics import evaluate_elbo
from vaelab.losses import elbo_terms
from vaelab.models import MLPVAE
from vaelab.objectives import ELBO
from vaelab.train import train_epoch

MODELS = {"default 784-256-2": (256, 2), "pytorch_example 784-400-20": (400, 20)}
BATCH = 128
EVAL_BATCH = 2000  # trainer.eval_batch_size's default: faster here than 500 or 10,000


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


class VaelabTrainer:
    """vaelab's own training step (train_epoch) with the default optimizer, conf/optimizer/adam.yaml."""

    def __init__(self, model, data, device, autocast):
        self.model, self.data, self.autocast = model, data, autocast
        adam = OmegaConf.load(Path(config_dir()) / "optimizer" / "adam.yaml")
        self.optimizer = build_optimizer(adam, model)
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.device = device

    def epoch(self) -> float:
        with tqdm(disable=True) as bar:
            sync(self.device)
            start = time.perf_counter()
            train_epoch(self.model, self.optimizer, self.data, BATCH, ELBO(), self.generator, bar,
                        progress_every=10**9, autocast=self.autocast)
            sync(self.device)
        return time.perf_counter() - start


def time_eval(model, data, device, autocast) -> float:
    evaluate_elbo(model, data.test.x, EVAL_BATCH, autocast)
    sync(device)
    start = time.perf_counter()
    for _ in range(3):
        evaluate_elbo(model, data.test.x, EVAL_BATCH, autocast)
    sync(device)
    return (time.perf_counter() - start) / 3


class DataLoaderBaseline:
    """The common way, as in pytorch/examples' VAE: torchvision MNIST + ToTensor + DataLoader,
    default Adam, a host sync (loss.item()) every step."""

    def __init__(self, hidden: int, latent: int, root: Path, device):
        from torchvision import datasets, transforms

        self.model = MLPVAE(hidden_dim=hidden, latent_dim=latent).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        train = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
        self.loader = torch.utils.data.DataLoader(train, batch_size=BATCH, shuffle=True)
        self.device = device

    def epoch(self) -> float:
        model, optimizer, device = self.model, self.optimizer, self.device
        start = time.perf_counter()
        total = 0.0
        for xb, _ in self.loader:
            xb = xb.to(device).view(-1, 784)
            out = model(xb)
            loss = elbo_terms(out.logits, xb, out.mu, out.logvar).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        sync(device)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model (median)")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="rounds that also time a DataLoader epoch (0: skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast of vaelab's forward pass")
    parser.add_argument("--root", default=None, help="data.root (default: ~/.cache/vaelab)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    autocast = {"fp32": None, "bf16": torch.bfloat16}[args.precision]
    root = Path(args.root) if args.root else default_root()
    data = load_mnist(ensure_mnist(root), device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu_name()}{gpu}, device {device},"
          f" precision {args.precision}")
    print(f"MNIST train {len(data.train):,} images, batch {BATCH}. Each round: one vaelab epoch, the matmul"
          f" ceiling on the same GEMM shapes, and (first {args.baseline_rounds} rounds) one DataLoader epoch;"
          f" medians over {args.rounds} rounds after a warm-up epoch.\n")
    header = (f"{'model':<28}{'s/epoch':>9}{'img/s':>10}{'GFLOP/s':>9}{'matmul':>9}{'ratio':>7}"
              f"{'eval s':>8}{'eval %':>8}{'DataLoader s':>14}{'speed-up':>10}")
    print(header)
    print("-" * len(header))
    for name, (hidden, latent) in MODELS.items():
        torch.manual_seed(0)
        model = MLPVAE(hidden_dim=hidden, latent_dim=latent).to(device)
        shapes = gemm_shapes(model, BATCH)
        steps = -(-len(data.train) // BATCH)
        ours = VaelabTrainer(model, data, device, autocast)
        base = DataLoaderBaseline(hidden, latent, root, device) if args.baseline_rounds else None
        ours.epoch()  # warm-up
        epochs, ceilings, ratios, speedups, base_epochs = [], [], [], [], []
        for r in range(args.rounds):
            epochs.append(ours.epoch())
            ceilings.append(matmul_gflops(shapes, device))
            ratios.append(flops(shapes) * steps / epochs[-1] / 1e9 / ceilings[-1])
            if base is not None and r < args.baseline_rounds:
                base_epochs.append(base.epoch())
                speedups.append(base_epochs[-1] / epochs[-1])
        epoch = statistics.median(epochs)
        eval_s = time_eval(model, data, device, autocast)
        median = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        print(f"{name:<28}{epoch:>9.3f}{len(data.train) / epoch:>10,.0f}{flops(shapes) * steps / epoch / 1e9:>9.1f}"
              f"{median(ceilings):>9.1f}{median(ratios):>7.0%}{eval_s:>8.3f}{eval_s / epoch:>8.1%}"
              f"{median(base_epochs):>14.2f}{median(speedups):>9.1f}x")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
