"""What one epoch's pictures cost in CPU: `reporting.log_epoch_images` into a SQLite store, waited for.

    python benchmarks/bench_pictures.py [--epochs 12]
    PYTHONPATH=<another checkout> python benchmarks/bench_pictures.py   # the same, for that code

Default model (untrained: the pictures cost the same), MNIST's 10,000 test images for the latent
scatter, a fresh store in a temporary folder. Per epoch it times the process's CPU seconds (every
thread: the training thread's decoder passes and the tracker's drawing, PNG and WebP encoding and
writes) from queueing the epoch's pictures until the tracker's thread has stored them, and prints the
median and the minimum. On 2 cores that torch's two threads keep busy, this CPU comes out of
training wherever it runs; compare two checkouts in interleaved runs, not across sessions.
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    opts = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import torch
    from hydra import compose, initialize_config_dir

    import vaelab
    from vaelab.building import build, build_model, prepare_data
    from vaelab.config import register_configs
    from vaelab.paths import config_dir
    from vaelab.metrics import encode_means
    from vaelab.reporting import Probe, log_epoch_images

    register_configs()
    home = tempfile.mkdtemp(prefix="bench_pictures_")
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        cfg = compose("config", overrides=[f"tracking.uri=sqlite:///{home}/mlflow.db",
                                           f"tracking.artifact_location={home}/artifacts"])
    data = prepare_data(build("data", cfg.data), torch.device("cpu"))
    model, tracker = build_model(cfg, data), build("tracking", cfg.tracking)
    tracker.connect("bench").result()
    probe = Probe.from_data(data, cfg.model.latent_dim, seed=0)
    seconds = []
    # Since 2026-12-03 an epoch's test ELBO hands the pictures its latent means (no encoder pass of
    # their own); an older checkout's log_epoch_images takes no `means` and encodes the test set.
    given = {}
    if "means" in inspect.signature(log_epoch_images).parameters:
        given["means"] = encode_means(model, probe.test_x, cfg.trainer.eval_batch_size)[0]
    with tracker.start(cfg, identity="bench"):
        for epoch in range(opts.epochs + 1):  # epoch 0 warms up (imports, fonts): not counted
            started = time.process_time()
            log_epoch_images(tracker, model, probe, cfg, epoch, **given)
            tracker._worker.drain()  # noqa: SLF001 - a benchmark waits for what the run would wait for at its end
            seconds.append(time.process_time() - started)
    ms = [s * 1000 for s in seconds[1:]]
    print(f"{os.path.dirname(vaelab.__file__)}: one epoch's pictures, CPU over {opts.epochs} epochs: "
          f"median {statistics.median(ms):.0f} ms, min {min(ms):.0f} ms")


if __name__ == "__main__":
    main()
