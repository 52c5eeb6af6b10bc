"""`vaelab ui` as a user runs it: the MLflow UI over vaelab's store, stopped by Ctrl-C; a taken
port is one line and exit 2."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request

from vaelab.services.process import free_port


def ui_command(home, *args: str) -> subprocess.Popen:
    env = {"VAELAB_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "vaelab", "ui", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_vaelab_ui_serves_the_store_until_ctrl_c(tmp_path):
    port = free_port()
    ui = ui_command(tmp_path, "--port", str(port))
    try:
        deadline, answer = time.monotonic() + 120, None
        while time.monotonic() < deadline and ui.poll() is None and answer is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    answer = reply.status
            except OSError:
                time.sleep(0.5)
        assert answer == 200, ui.stdout.read() if ui.poll() is not None else "no answer"
        assert (tmp_path / "mlflow.db").is_file(), "the UI serves vaelab's own store in VAELAB_HOME"
    finally:
        ui.send_signal(signal.SIGINT)  # Ctrl-C reaches the server itself (it replaced the command)
        out, _ = ui.communicate(timeout=30)
    ours = [line for line in out.splitlines() if "mlflow.store.db" not in line]  # a new store's tables: MLflow's log
    assert ours[0] == f"vaelab ui: sqlite:///{tmp_path / 'mlflow.db'} at http://127.0.0.1:{port}"


def test_vaelab_ui_on_a_taken_port_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ui = ui_command(tmp_path, "--port", str(port))
        out, _ = ui.communicate(timeout=120)
    assert ui.returncode == 2
    assert out.strip() == f"vaelab ui: error: port {port} on 127.0.0.1 is taken: choose another (--port)"
