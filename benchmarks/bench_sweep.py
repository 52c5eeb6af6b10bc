"""A sweep under the stacked launcher against the same sweep under the basic launcher, side by side.

    python benchmarks/bench_sweep.py [--betas 0.5,1,2,4] [--seeds 0,1,2,3] [--epochs 5] [--limit N]

Both sweeps run the real command (`vaelab --multirun ...`), default model, full MNIST (or its first
`--limit` training images), tracking on into one fresh SQLite store per launcher, pictures and
checkpoints at their default cadence. The basic sweep runs first. Printed: each command's wall time,
the training time of its members (the sum of their `time/train_s`; under the stacked launcher that
is each member's share of the stacked epochs), the target ratio (stacked wall time over the basic
sweep's training time; the issue asks <= 1.1), members per hour, and where the stacked sweep's time
went, as its group prints it (opening the jobs, stacked steps, test ELBO, pictures, checkpoints, wrap-up).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(launcher: str, overrides: list[str], home: Path) -> tuple[float, str]:
    """Wall seconds and output of one `vaelab --multirun` into `home`."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vaelab", "--multirun", f"hydra/launcher={launcher}", *overrides],
                          env=os.environ | {"VAELAB_HOME": str(home)}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"the {launcher} sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def members(home: Path) -> list[dict[str, float]]:
    """Per member: the sum over its epochs of `time/train_s`."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    [exp] = [e for e in client.search_experiments() if e.name == "vaelab"]
    rows = []
    for run in client.search_runs([exp.experiment_id]):
        if run.data.tags.get("sweep") == "parent":
            continue
        rows.append({"train_s": sum(m.value for m in client.get_metric_history(run.info.run_id, "time/train_s"))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--betas", default="0.5,1,2,4")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="data.limit: the first N training images")
    parser.add_argument("--launchers", default="basic,stacked")
    opts = parser.parse_args()
    overrides = [f"loss.beta={opts.betas}", f"trainer.seed={opts.seeds}", f"trainer.epochs={opts.epochs}",
                 "trainer.progress=false", *([f"data.limit={opts.limit}"] if opts.limit else [])]
    k = len(opts.betas.split(",")) * len(opts.seeds.split(","))
    print(f"{k}-job sweep: {' '.join(overrides)}, default model, tracking on\n", flush=True)
    results = {}
    for launcher in opts.launchers.split(","):
        home = Path(tempfile.mkdtemp(prefix=f"bench_sweep_{launcher}_"))
        wall, out = sweep(launcher, overrides, home)
        results[launcher] = (wall, members(home))
        for line in out.splitlines():
            if line.startswith("stacked: ") and " jobs in " in line:  # the group's own account of its time
                print(f"  {line}")
        shutil.rmtree(home, ignore_errors=True)
        print(f"  {launcher:<8} {wall:7.1f} s wall, members' training {sum(m['train_s'] for m in results[launcher][1]):7.1f} s",
              flush=True)
    print("\n| launcher | wall s | members' training s | wall / basic training | members per hour |")
    print("|---|---:|---:|---:|---:|")
    basic_train = sum(m["train_s"] for m in results["basic"][1]) if "basic" in results else None
    for launcher, (wall, rows) in results.items():
        ratio = f"{wall / basic_train:.2f}" if basic_train else "-"
        print(f"| {launcher} | {wall:.1f} | {sum(m['train_s'] for m in rows):.1f} | {ratio} | {3600 * k / wall:.0f} |")


if __name__ == "__main__":
    main()
