"""Links into the MLflow UI that serves a store: printed at the end of a run and of a sweep."""

from __future__ import annotations

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000  # where `vaelab ui` and `make ui` listen by default
DEFAULT_UI = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"


def ui_base(uri: str | None, configured: str | None = None) -> str:
    """The UI's address: `tracking.ui_url` if set; a tracking server is its own UI; else the
    address `vaelab ui` serves a local store on."""
    if configured:
        return configured.rstrip("/")
    if uri and uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return DEFAULT_UI


def run_link(base: str, experiment_id: str | None, run_id: str | None) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
