"""Training throughput of vaelab against the machine's matmul speed and a DataLoader baseline.

    python benchmarks/bench_train.py [--presets default pytorch_example keras_seed] [--rounds 5]
        [--baseline-rounds 3] [--threads N] [--device auto] [--precision fp32|bf16] [--startup-runs 1]

Each preset is composed from conf/ as `vaelab experiment=<preset>` would be (model, init, optimizer,
batch size), and trained by vaelab's own `train_epoch`. Per preset it prints: train seconds per
epoch (median), images/s, achieved GFLOP/s (counted from the Linear layer shapes, forward +
backward), the matmul GFLOP/s this process reaches on the very same GEMM shapes, their ratio, the
test-set evaluation time, and the same model trained by a plain torchvision DataLoader + ToTensor
loop with its speed-up (per training epoch, and per whole epoch with evaluation).

With `--threads 1` every time is the CPU time of the one thread doing the work (time.thread_time),
which a busy shared machine barely moves; otherwise wall time. `--startup-runs N` also runs the real
command N times (3 short epochs, MLflow into a temporary store) and prints command -> first step and
epoch 1 against the later epochs, from the app's own output, and the seconds from its last line
to its exit (and to the end of its output).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tqdm import tqdm

from vaelab.paths import config_dir
from vaelab.config import register_configs
from vaelab.building import AUTOCAST, build_model, build_objective, build_optimizer, resolve_device
from vaelab.data import default_root, ensure_mnist, load_mnist
from vaelab.metrics import evaluate_elbo
from vaelab.losses import elbo_terms
from vaelab.train import train_epoch

PRESETS = ["default", "pytorch_example", "keras_seed"]
EVAL_BATCH = 2000  # trainer.eval_batch_size's default: faster here than 500 or 10,000
clock = time.perf_counter  # time.thread_time under --threads 1 (see main)


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
    start = clock()
    for _ in range(repeats):
        for a, b in operands:
            torch.mm(a, b)
    sync(device)
    return flops(shapes) * repeats / (clock() - start) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class VaelabTrainer:
    """vaelab's own training step (train_epoch) with the preset's optimizer and batch size."""

    def __init__(self, model, cfg: DictConfig, data, device, autocast):
        self.model, self.data, self.autocast = model, data, autocast
        self.optimizer = build_optimizer(cfg.optimizer, model)
        self.objective = build_objective(cfg, data)
        self.batch = cfg.trainer.batch_size
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.device = device

    def epoch(self) -> float:
        with tqdm(disable=True) as bar:
            sync(self.device)
            start = clock()
            train_epoch(self.model, self.optimizer, self.data, self.batch, self.objective, self.generator, bar,
                        progress_every=10**9, autocast=self.autocast)
            sync(self.device)
        return clock() - start


def time_eval(model, data, device, autocast) -> float:
    evaluate_elbo(model, data.test.x, EVAL_BATCH, autocast)
    sync(device)
    start = clock()
    for _ in range(3):
        evaluate_elbo(model, data.test.x, EVAL_BATCH, autocast)
    sync(device)
    return (clock() - start) / 3


class DataLoaderBaseline:
    """The common way, as in pytorch/examples' VAE: torchvision MNIST + ToTensor + DataLoader,
    default Adam, a host sync (loss.item()) every step; the preset's model and batch size."""

    def __init__(self, cfg: DictConfig, data, root: Path, device):
        from torchvision import datasets, transforms

        self.model = build_model(cfg, data).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        train = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
        self.loader = torch.utils.data.DataLoader(train, batch_size=cfg.trainer.batch_size, shuffle=True)
        self.device = device

    def epoch(self) -> float:
        model, optimizer, device = self.model, self.optimizer, self.device
        start = clock()
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
        return clock() - start


def preset_config(preset: str) -> DictConfig:
    """The config `vaelab experiment=<preset>` composes (`default`: no experiment)."""
    register_configs()  # the schemas the defaults lists name
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=[] if preset == "default" else [f"experiment={preset}"])


def timed_command(cmd: list[str], env: dict[str, str]) -> tuple[int, str, dict[str, float]]:
    """Run `cmd`; its exit status, output, and seconds from its start to its last output line, to
    its own exit, and to the end of its output (a child process that shares it may outlive it)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exited: list[float] = []
    waiter = threading.Thread(target=lambda: (proc.wait(), exited.append(time.perf_counter())))
    waiter.start()
    lines, last = [], started
    for line in proc.stdout:
        lines.append(line)
        last = time.perf_counter()
    closed = time.perf_counter()
    waiter.join()
    return proc.returncode, "".join(lines), {
        "last line": last - started, "exit": exited[0] - started, "output closed": closed - started}


def startup_figures(runs: int, threads: int | None) -> None:
    """Run the real command (3 epochs, MLflow into a temporary store) and read its own timings;
    time what follows its last line too (the wrap-up's end, the interpreter's exit)."""
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    startups, firsts, laters, tails, closes = [], [], [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            cmd = [sys.executable, "-m", "vaelab", "trainer.epochs=3", "trainer.progress=false",
                   "trainer.images_every=1"]
            code, out, times = timed_command(cmd, env | {"VAELAB_HOME": home})
        if code != 0:
            print(f"start-up run failed ({code}): {out.strip().splitlines()[-1:]}")
            return
        startups.append(float(re.search(r"startup: ([\d.]+)s", out).group(1)))
        epochs = [float(t) for t in re.findall(r"^epoch .* ([\d.]+)s$", out, re.M)]
        firsts.append(epochs[0])
        laters.append(statistics.median(epochs[1:]))
        tails.append(times["exit"] - times["last line"])
        closes.append(times["output closed"] - times["exit"])
    first, later = statistics.median(firsts), statistics.median(laters)
    print(f"\nvaelab trainer.epochs=3 (default model, MLflow on), wall time, median of {runs}:"
          f" command -> first step {statistics.median(startups):.2f} s;"
          f" epoch 1 {first:.1f} s vs later epochs {later:.1f} s ({first / later - 1:+.0%});"
          f" last line -> exit {statistics.median(tails):.2f} s, then its output closed after"
          f" {statistics.median(closes):.2f} s")


def main() -> None:
    global clock
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=PRESETS, help="experiment presets (default: no preset)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per preset (median)")
    parser.add_argument("--baseline-rounds", type=int, default=3, help="rounds that also time a DataLoader epoch (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="autocast of vaelab's forward pass")
    parser.add_argument("--root", default=None, help="data.root (default: ~/.cache/vaelab)")
    parser.add_argument("--startup-runs", type=int, default=1, help="real 3-epoch runs for the start-up figures (0: skip)")
    parser.add_argument("--keep-denormals", action="store_true", help="skip the flush to zero (the old behaviour)")
    args = parser.parse_args()

    torch.set_flush_denormal(not args.keep_denormals)  # as vaelab.app.run does, before any thread starts
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    device = resolve_device(args.device)
    autocast = AUTOCAST[args.precision]
    root = Path(args.root) if args.root else default_root()
    data = load_mnist(ensure_mnist(root), device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    what = "CPU time of the working thread" if clock is time.thread_time else "wall time"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads ({what}), {_cpu_name()}"
          f" ({torch.backends.cpu.get_cpu_capability()}){gpu}, device {device}, precision {args.precision}")
    print(f"MNIST train {len(data.train):,} images. Each round: one vaelab epoch, the matmul ceiling on the same"
          f" GEMM shapes, and (first {args.baseline_rounds} rounds) one DataLoader epoch; medians over"
          f" {args.rounds} rounds after a warm-up epoch. speed-up+eval: DataLoader epoch / (vaelab epoch + eval).\n")
    header = (f"{'preset':<16}{'model':<12}{'batch':>6}{'s/epoch':>9}{'img/s':>9}{'GFLOP/s':>9}{'matmul':>8}{'ratio':>7}"
              f"{'eval s':>8}{'DataLoader s':>14}{'speed-up':>10}{'+eval':>7}")
    print(header)
    print("-" * len(header))
    for preset in args.presets:
        cfg = preset_config(preset)
        torch.manual_seed(0)
        model = build_model(cfg, data).to(device)
        batch = cfg.trainer.batch_size
        shapes = gemm_shapes(model, batch)
        steps = -(-len(data.train) // batch)
        ours = VaelabTrainer(model, cfg, data, device, autocast)
        base = DataLoaderBaseline(cfg, data, root, device) if args.baseline_rounds else None
        ours.epoch()  # warm-up
        epochs, ceilings, ratios, base_epochs, rounds_with_base = [], [], [], [], []
        for r in range(args.rounds):
            epochs.append(ours.epoch())
            ceilings.append(matmul_gflops(shapes, device))
            ratios.append(flops(shapes) * steps / epochs[-1] / 1e9 / ceilings[-1])
            if base is not None and r < args.baseline_rounds:
                base_epochs.append(base.epoch())
                rounds_with_base.append(r)
        epoch = statistics.median(epochs)
        eval_s = time_eval(model, data, device, autocast)
        median = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        speedup = median([b / epochs[r] for b, r in zip(base_epochs, rounds_with_base)])
        speedup_eval = median([b / (epochs[r] + eval_s) for b, r in zip(base_epochs, rounds_with_base)])
        hidden, latent = cfg.model.hidden_dim, cfg.model.latent_dim
        print(f"{preset:<16}{f'784-{hidden}-{latent}':<12}{batch:>6}{epoch:>9.3f}{len(data.train) / epoch:>9,.0f}"
              f"{flops(shapes) * steps / epoch / 1e9:>9.1f}{median(ceilings):>8.1f}{median(ratios):>7.0%}"
              f"{eval_s:>8.3f}{median(base_epochs):>14.2f}{speedup:>9.1f}x{speedup_eval:>6.1f}x", flush=True)
    if args.startup_runs:
        startup_figures(args.startup_runs, args.threads)


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
