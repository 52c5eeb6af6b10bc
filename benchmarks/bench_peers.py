"""vaelab against the seed's own system: `experiment=keras_seed` against the classic Keras VAE.

    make bench-peers                     # = .venv/bin/python benchmarks/bench_peers.py
    .venv/bin/python benchmarks/bench_peers.py --rounds 3 --epochs 3

Whole processes, timed from outside as a user meets them: the same model, loss, optimizer, batch
size and per-epoch test evaluation on both sides (benchmarks/peers/keras_seed.py is the seed
written in Keras 3 on the same torch). Two figures per epoch:
- "s/epoch": what each process reports for its epochs 2..E (Keras: a callback from the start of
  an epoch to its end, validation included; vaelab: its epoch line, evaluation and logging
  included), the median over all rounds. It is the steadier figure.
- "by T(E)-T(1)": (T(E epochs) - T(1 epoch)) / (E - 1) from outside, as issue 9 measured; the
  difference of two whole processes, so it carries the noise of both.
The fixed cost of a run (start-up and wrap-up: imports, data, the final evaluation and logging)
is T(1 epoch) minus one epoch. The commands alternate within each round, so the machine's drift
moves both sides alike; the figures are medians over rounds.

vaelab runs twice: `tracking=none` (the framework alone, as Keras here logs nothing) and with
MLflow into a temporary store, pictures and checkpoints every epoch (what `vaelab` does by default).
Keras comes from `.peers/` (`make bench-peers` installs it there; it is not a vaelab dependency).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".peers"
KERAS = [sys.executable, str(ROOT / "benchmarks" / "peers" / "keras_seed.py")]
VAELAB = [sys.executable, "-m", "vaelab", "experiment=keras_seed", "trainer.progress=false"]
SYSTEMS = {
    "keras 3 (torch backend)": lambda e: [*KERAS, "--epochs", str(e)],
    "vaelab tracking=none": lambda e: [*VAELAB, f"trainer.epochs={e}", "tracking=none"],
    "vaelab + MLflow": lambda e: [*VAELAB, f"trainer.epochs={e}"],
}


EPOCH_LINE = re.compile(r"^epoch\s+(\d+)\b.*?([\d.]+)s$", re.M)  # both print "epoch N ... <seconds>s"


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, list[float]]:
    """Wall seconds of the whole process, and the seconds it reports for its epochs after the first."""
    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env | {"VAELAB_HOME": home}, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"bench_peers: {' '.join(cmd)} failed ({done.returncode}):\n" + "\n".join(tail))
    later = [float(s) for n, s in EPOCH_LINE.findall(done.stdout) if int(n) > 1]
    return seconds, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--epochs", type=int, default=3, help="E of the long run (>= 2)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2")
    if not (PEERS / "keras").is_dir():
        raise SystemExit(f"bench_peers: Keras is not in {PEERS}; `make bench-peers` installs it there")
    env = os.environ | {"KERAS_BACKEND": "torch", "PYTHONPATH": os.pathsep.join(
        p for p in (str(PEERS), os.environ.get("PYTHONPATH", "")) if p)}

    reported: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    outside: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    fixed: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    for r in range(1, args.rounds + 1):
        for name, command in SYSTEMS.items():
            (short, _), (long, later) = timed(command(1), env), timed(command(args.epochs), env)
            reported[name] += later
            outside[name].append((long - short) / (args.epochs - 1))
            fixed[name].append(short - statistics.median(later))
            print(f"round {r}: {name:<24} 1 epoch {short:6.2f} s, {args.epochs} epochs {long:6.2f} s;"
                  f" epochs 2-{args.epochs} reported {' '.join(f'{s:.2f}' for s in later)} s", flush=True)

    def median(of: dict[str, list[float]], name: str) -> float:
        return statistics.median(of[name])

    keras = "keras 3 (torch backend)"
    print(f"\nexperiment=keras_seed (784-256-2, RMSprop, batch 100), whole processes, {args.rounds} rounds;"
          f" test evaluation included\n")
    print(f"{'system':<26}{'s/epoch':>9}{'vs keras':>10}{'by T(E)-T(1)':>14}{'vs keras':>10}{'fixed s':>9}")
    print("-" * 78)
    for name in SYSTEMS:
        print(f"{name:<26}{median(reported, name):9.2f}{median(reported, keras) / median(reported, name):9.1f}x"
              f"{median(outside, name):14.2f}{median(outside, keras) / median(outside, name):9.1f}x"
              f"{median(fixed, name):9.2f}")

if __name__ == "__main__":
    main()
