"""What the shared server's login costs a client: requests against a local MLflow server without a
login, with MLflow's login as it comes (a password check per request), and with vaelab's login
(MLflow's credential cache on), side by side.

    python benchmarks/bench_login.py [--requests 20]

Prints, per server, the time of `--requests` `get_run` calls and the time per request.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path


def measure(folder: Path, login: str, requests: int) -> float:
    from mlflow import MlflowClient

    from vaelab.services import MlflowServer
    from vaelab.services.login import Login
    from vaelab.tracking.store import use_credentials

    auth = Login(folder / "auth") if login != "none" else None
    if auth is not None:
        auth.prepare()
        if login == "mlflow":  # MLflow's default: no credential cache
            auth.config.write_text(re.sub(r"(?m)^auth_cache_ttl_seconds = .*$", "auth_cache_ttl_seconds = 0",
                                          auth.config.read_text()))
    with MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", folder / "artifacts", login=auth) as server:
        if auth is not None:
            use_credentials(str(auth.credentials))  # a server without a login ignores them
        client = MlflowClient(tracking_uri=server.uri)
        run_id = client.create_run(client.create_experiment("bench")).info.run_id
        started = time.perf_counter()
        for _ in range(requests):
            client.get_run(run_id)
        return time.perf_counter() - started

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    print(f"{'server':<40} {args.requests} get_run   per request")
    for login, label in (("none", "no login"), ("mlflow", "login, MLflow's default (no cache)"),
                         ("vaelab", "login, vaelab's (cache 60 s)")):
        with tempfile.TemporaryDirectory() as tmp:
            seconds = measure(Path(tmp), login, args.requests)
        print(f"{label:<40} {seconds:9.2f} s   {1000 * seconds / args.requests:6.0f} ms", flush=True)


if __name__ == "__main__":
    main()
