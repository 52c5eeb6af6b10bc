"""What every service shares: free ports, daemons that log to a file, readiness waits that show
the log's tail when they fail, and a stop that always ends with the process gone."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

POLL_S = 0.2  # how often a readiness check is retried


class ServiceError(RuntimeError):
    """A service did not start or stop; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def is_root() -> bool:
    return os.geteuid() == 0


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def as_user(user: str | None) -> dict:
    """Popen keywords that run a child as `user` (only meaningful, and only used, when root)."""
    if user is None or not is_root():
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def chown_to(path: Path, user: str | None) -> None:
    """Hand `path` to `user` when root (daemons that refuse root must own their folders)."""
    if user is not None and is_root():
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:]) or f"({path} is empty)"


def run_checked(cmd: Sequence[str], what: str, user: str | None = None, **kwargs) -> str:
    """Run a short command to completion; a failure is a ServiceError with its output."""
    out = subprocess.run(list(cmd), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=kwargs.pop("timeout", 120), **as_user(user), **kwargs)
    if out.returncode != 0:
        raise ServiceError(f"{what} failed (exit {out.returncode}): {' '.join(cmd)}\n"
                           f"{(out.stdout + out.stderr).strip()[-3000:]}")
    return out.stdout


def wait_until(ready: Callable[[], bool], timeout: float, what: str,
               alive: Callable[[], str | None] = lambda: None) -> None:
    """Poll `ready` until it holds; `alive` returns a reason when waiting is pointless."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if (dead := alive()) is not None:
            raise ServiceError(f"{what}: {dead}")
        time.sleep(POLL_S)
    raise ServiceError(f"{what}: not ready after {timeout:.0f} s")


class Daemon:
    """One long-running process started in its own session (so a terminal's Ctrl-C reaches the
    owner, which stops its daemons in order), its output appended to a log file."""

    def __init__(self, name: str, cmd: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, user: str | None = None, stop_signal: int = signal.SIGTERM,
                 whole_group: bool = False) -> None:
        self.name, self.log = name, Path(log)
        self.stop_signal, self.whole_group = stop_signal, whole_group
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
                **as_user(user),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def exit_reason(self) -> str | None:
        """None while running, else why waiting on it is pointless (with its log's tail)."""
        if self.running():
            return None
        return f"{self.name} exited with code {self.proc.returncode}; last lines of {self.log}:\n{log_tail(self.log)}"

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        try:
            wait_until(ready, timeout, f"{self.name} did not start", self.exit_reason)
        except ServiceError as err:
            if self.running():  # timed out: the log says why
                raise ServiceError(f"{err}; last lines of {self.log}:\n{log_tail(self.log)}") from None
            raise

    def stop(self, timeout: float = 20.0) -> None:
        """Ask it to stop (its stop signal), then kill it; returns once it is gone."""
        if self.running():
            self._signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout)
        if self.whole_group:  # children it forked (e.g. uvicorn under `mlflow server`)
            self._signal_group(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.whole_group:
            self._signal_group(sig)
        elif self.running():
            self.proc.send_signal(sig)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the group id is its pid
        except ProcessLookupError:
            pass
