"""What tracking costs: the real command with MLflow against `tracking=none`, side by side.

    python benchmarks/bench_tracking.py [--rounds 3] [--epochs 4] [--threads N]

Each round runs `vaelab` twice in a row, once tracked into a SQLite store (made beforehand by
one short run, as a user's store is) and once with `tracking=none`, in alternating order (the machine's speed drifts; a pair shares it). Default
model, full MNIST, pictures and a checkpoint every epoch. Per pair it reads the command's wall
time and its own epoch lines (`time/wall_s`: the epoch as the user waits for it, logging
included), and prints, as medians over the rounds:

- the per-epoch cost: tracked epoch / untracked epoch - 1 (epochs 2..N; epoch 1 pays warm-up);
- the fixed cost: the wall-time difference of the two commands, less the difference of epochs
  2..N (what a tracked command pays once: imports, the store, what its epoch 1 takes beyond the
  untracked epoch 1, the wrap-up, the model, the exit). Before 2026-12-02 it left epoch 1 out as well.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(args: list[str], env: dict[str, str]) -> tuple[float, list[float], str]:
    """Wall seconds of `python -m vaelab args`, its epoch seconds, its output."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vaelab", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"vaelab {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    epochs = [float(t) for t in re.findall(r"^epoch .* ([\d.]+)s$", proc.stdout, re.M)]
    return wall, epochs, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for both commands")
    opts = parser.parse_args()
    env = os.environ | ({"OMP_NUM_THREADS": str(opts.threads)} if opts.threads else {})
    common = [f"trainer.epochs={opts.epochs}", "trainer.progress=false", "trainer.images_every=1",
              "trainer.checkpoint_every=1", "trainer.resume=false"]
    fixed, per_epoch, walls = [], [], {"mlflow": [], "none": []}
    home = tempfile.mkdtemp(prefix="bench_tracking_")
    env |= {"VAELAB_HOME": home}
    timed(["trainer.epochs=1", "data.limit=1000", "trainer.progress=false"], env)  # the data and the store exist
    for round_ in range(opts.rounds):
        results = {}
        order = ["mlflow", "none"] if round_ % 2 == 0 else ["none", "mlflow"]
        for kind in order:
            results[kind] = timed([*common, f"tracking={kind}"], env)
        (wall_t, ep_t, _), (wall_n, ep_n, _) = results["mlflow"], results["none"]
        walls["mlflow"].append(wall_t)
        walls["none"].append(wall_n)
        per_epoch.append(statistics.median(ep_t[1:]) / statistics.median(ep_n[1:]) - 1)
        fixed.append((wall_t - wall_n) - (sum(ep_t[1:]) - sum(ep_n[1:])))
        print(f"round {round_ + 1}: tracked {wall_t:.1f} s (epochs {' '.join(f'{e:.2f}' for e in ep_t)}), "
              f"none {wall_n:.1f} s (epochs {' '.join(f'{e:.2f}' for e in ep_n)})", flush=True)
    print(f"\n{opts.epochs} epochs, default model, full MNIST, pictures and checkpoint every epoch, "
          f"median of {opts.rounds} pairs:")
    print(f"  command wall time   tracked {statistics.median(walls['mlflow']):6.1f} s   "
          f"none {statistics.median(walls['none']):6.1f} s")
    print(f"  fixed cost          {statistics.median(fixed):+6.2f} s   (budget <= 1.5 s)")
    print(f"  per-epoch cost      {statistics.median(per_epoch):+6.1%}   (budget <= 10 %)")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
